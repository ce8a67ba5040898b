"""asyncio tasks: create_task, gather, TaskGroup; errors, cancellation, context."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode


async def _inner_span(tracer: Any, name: str) -> int:
    with tracer.start_as_current_span(name) as span:
        await asyncio.sleep(0)
        return span.parent.span_id  # type: ignore[no-any-return]


def test_tasks_nest_under_their_creator_and_parent_their_own_spans(memory: Any) -> None:
    """create_task and gather: one span per task, under the task that created it."""
    tracer = memory.tracer()

    async def main() -> list[int]:
        first = asyncio.create_task(_inner_span(tracer, "a"), name="first")
        return [
            await first,
            *await asyncio.gather(_inner_span(tracer, "b"), _inner_span(tracer, "c")),
        ]

    parents_of_inner = asyncio.run(main())
    tasks = {s.attributes["procscope.task.name"]: s for s in memory.spans("task")}
    main_span = next(
        s for s in tasks.values() if s.attributes["procscope.task.function"].endswith("main")
    )
    children = [s for s in tasks.values() if s is not main_span]
    assert len(children) == 3
    assert {s.parent.span_id for s in children} == {main_span.context.span_id}
    assert tasks["first"].name == "task first"
    # A span made inside a task is a child of that task's span.
    assert sorted(parents_of_inner) == sorted(s.context.span_id for s in children)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in 3.11")
def test_task_group_tasks_get_spans(memory: Any) -> None:
    """TaskGroup.create_task goes through the loop: a span per task, under the group's task."""

    async def main() -> None:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            for n in range(3):
                group.create_task(asyncio.sleep(0), name=f"member-{n}")

    asyncio.run(main())
    spans = memory.spans("task")
    members = [s for s in spans if s.name.startswith("task member-")]
    assert sorted(s.name for s in members) == ["task member-0", "task member-1", "task member-2"]
    (main_span,) = [s for s in spans if s not in members]
    assert {s.parent.span_id for s in members} == {main_span.context.span_id}


def test_failed_task_is_recorded_without_retrieving_its_exception(memory: Any) -> None:
    """A failed task: ERROR + exception event; asyncio still reports it as never retrieved."""
    reported: list[dict[str, Any]] = []

    async def fail() -> None:
        raise ValueError("task failed")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        task = asyncio.create_task(fail(), name="failing")
        await asyncio.sleep(0.01)
        assert task.done()
        del task
        gc.collect()

    asyncio.run(main())
    (span,) = [s for s in memory.spans("task") if s.name == "task failing"]
    assert span.status.status_code is StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in span.events] == ["ValueError"]
    assert any("never retrieved" in str(ctx.get("message")) for ctx in reported)


def test_cancelled_task_is_marked_and_not_an_error(memory: Any) -> None:
    """A cancelled task: procscope.task.cancelled, status left unset."""

    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(10), name="sleeper")
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (span,) = [s for s in memory.spans("task") if s.name == "task sleeper"]
    assert span.attributes["procscope.task.cancelled"] is True
    assert span.status.status_code is StatusCode.UNSET


def test_errors_mode_records_only_failed_tasks_and_keeps_context(instrument: Any) -> None:
    """spans="errors": no span for good tasks, a late span for a failed one; context kept."""
    memory = instrument(spans="errors")
    tracer = memory.tracer()

    async def fail() -> None:
        raise OSError("disk")

    async def main() -> int:
        with tracer.start_as_current_span("creator"):
            parent = await asyncio.create_task(_inner_span(tracer, "inside"))
            with pytest.raises(OSError):
                await asyncio.create_task(fail(), name="bad")
            return parent

    parent_of_inside = asyncio.run(main())
    (span,) = memory.spans("task")
    assert span.name == "task bad" and span.attributes["procscope.lifecycle.error_only"] is True
    creator = next(s for s in memory.spans() if s.name == "creator")
    assert span.parent.span_id == creator.context.span_id
    assert parent_of_inside == creator.context.span_id


def test_task_result_and_identity_are_unchanged(memory: Any) -> None:
    """The task returns its coroutine's result and get_coro() is the coroutine given."""

    async def value() -> str:
        return "v"

    async def main() -> tuple[Any, Any, Any]:
        coro = value()
        task = asyncio.create_task(coro)
        return coro, task.get_coro(), await task

    coro, got, result = asyncio.run(main())
    assert got is coro and result == "v"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_task_named_with_procscope_name_is_recorded_by_that_name(memory: Any) -> None:
    """procscope.name() on an asyncio Task (which takes attributes but shows no
    ``__dict__``) names its span; the name was kept and then never read."""
    import procscope

    async def work() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        task = procscope.name(asyncio.create_task(work()), "billing-poller")
        await task

    asyncio.run(main())
    names = {s.name for s in memory.spans("task")}
    assert "task billing-poller" in names
