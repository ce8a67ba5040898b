"""asyncio.Queue, LifoQueue and PriorityQueue between real asyncio tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace


@pytest.mark.parametrize("cls", [asyncio.Queue, asyncio.LifoQueue, asyncio.PriorityQueue])
def test_consumer_task_joins_the_producer_trace(recorder: Any, cls: Any) -> None:
    """A task's get span and its work are in the trace of the task that put the message."""
    tracer = recorder.tracer

    async def main() -> list[Any]:
        q = cls()
        got: list[Any] = []

        async def consumer() -> None:
            for _ in range(3):
                item = await q.get()
                with tracer.start_as_current_span("handle"):
                    got.append(item)
                q.task_done()

        async def producer(i: int) -> None:
            with tracer.start_as_current_span(f"request-{i}"):
                await q.put((i, "job"))

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0)  # the consumer blocks in get first
        await asyncio.gather(*(producer(i) for i in range(3)))
        await asyncio.wait_for(task, 5)
        return got

    got = asyncio.run(main())
    assert sorted(got) == [(i, "job") for i in range(3)]
    sends, receives = recorder.messaging("send"), recorder.messaging("receive")
    assert len(sends) == len(receives) == 3
    by_id = {s.attributes["messaging.message.id"]: s for s in sends}
    for receive in receives:
        send = by_id[receive.attributes["messaging.message.id"]]
        assert receive.context.trace_id == send.context.trace_id
        assert receive.attributes["messaging.system"] == "python_asyncio_queue"
    handles = recorder.spans("handle")
    assert len(handles) == 3
    assert {h.context.trace_id for h in handles} == {s.context.trace_id for s in sends}
    # The first get waited for the producers: it records a block time.
    assert max(r.attributes["procscope.messaging.block_time"] for r in receives) > 0


def test_attached_context_stays_in_its_task(recorder: Any) -> None:
    """The message context of one task is not seen by a sibling task, and leaves at task_done."""
    tracer = recorder.tracer

    async def main() -> dict[str, bool]:
        q: asyncio.Queue[str] = asyncio.Queue()
        seen: dict[str, bool] = {}
        got = asyncio.Event()

        async def consumer() -> None:
            await q.get()
            seen["consumer"] = trace.get_current_span().get_span_context().is_valid
            got.set()
            await asyncio.sleep(0.01)
            q.task_done()
            seen["after_task_done"] = trace.get_current_span().get_span_context().is_valid

        async def sibling() -> None:
            await got.wait()
            seen["sibling"] = trace.get_current_span().get_span_context().is_valid

        with tracer.start_as_current_span("producer"):
            q.put_nowait("m")
        await asyncio.gather(consumer(), sibling())
        seen["main"] = trace.get_current_span().get_span_context().is_valid
        return seen

    assert asyncio.run(main()) == {
        "consumer": True,
        "sibling": False,
        "after_task_done": False,
        "main": False,
    }


def test_asyncio_queue_semantics_are_unchanged(recorder: Any) -> None:
    """QueueFull, QueueEmpty, maxsize, qsize and timeouts behave exactly as before."""

    async def main() -> None:
        q: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        marker = object()
        await q.put(marker)
        assert q.full() and q.qsize() == 1
        with pytest.raises(asyncio.QueueFull):
            q.put_nowait(2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(q.put(3), 0.05)
        assert q.get_nowait() is marker
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)
        assert q.empty()
        # A cancelled get leaves the queue usable.
        q.put_nowait("after")
        assert await q.get() == "after"

    asyncio.run(main())
    errors = [s for s in recorder.messaging("send") if s.status.status_code.name == "ERROR"]
    assert [s.attributes["error.type"] for s in errors] == ["QueueFull"]


def _task_names_of_messages(provider: Any, flush: Any) -> list[tuple[str, str]]:
    """Two named tasks pass two messages through an asyncio.Queue: (operation, task name)
    of each messaging span, as recorded."""
    from procscope.instrumentation.messaging import MessagingInstrumentor

    instrumentor = MessagingInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:

        async def main() -> None:
            q: asyncio.Queue[int] = asyncio.Queue()

            async def produce() -> None:
                for i in range(2):
                    await q.put(i)

            async def consume() -> None:
                for _ in range(2):
                    await q.get()

            await asyncio.gather(
                asyncio.create_task(consume(), name="consumer-7"),
                asyncio.create_task(produce(), name="producer-3"),
            )

        asyncio.run(main())
        q_outside: asyncio.Queue[int] = asyncio.Queue()
        q_outside.put_nowait(1)  # no running loop: no task to name
        q_outside.get_nowait()
    finally:
        instrumentor.uninstrument()
    return [
        (s.attributes["messaging.operation.type"], s.attributes.get("procscope.task.name"))
        for s in flush()
        if "messaging.operation.type" in (s.attributes or {})
    ]


@pytest.mark.parametrize("path", ["records", "sdk spans"])
def test_messages_name_the_task_that_sent_and_received_them(live_settings: Any, path: str) -> None:
    """Send and receive spans of an asyncio queue carry their task's name (none outside a
    task), through the recorder and through plain SDK spans alike."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from procscope.core.recorder import RecordingSpanProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor: Any = SimpleSpanProcessor(exporter)
    if path == "records":
        processor = RecordingSpanProcessor([processor])
    provider.add_span_processor(processor)

    def flush() -> list[Any]:
        provider.force_flush()
        return list(exporter.get_finished_spans())

    try:
        found = _task_names_of_messages(provider, flush)
    finally:
        provider.shutdown()
    assert sorted(found, key=str) == sorted(
        [("send", "producer-3")] * 2 + [("receive", "consumer-7")] * 2
        + [("send", None), ("receive", None)],
        key=str,
    )


def test_block_time_is_the_wait_of_the_get_that_waited(recorder: Any) -> None:
    """A get that waits 0.2 s for its message records about 0.2 s blocked; a get that a
    task makes after its own wait was cancelled, with the message already there,
    records none of that wait."""

    async def main() -> None:
        q: asyncio.Queue[str] = asyncio.Queue()

        async def late_put() -> None:
            await asyncio.sleep(0.2)
            q.put_nowait("late")

        producer = asyncio.create_task(late_put())
        assert await q.get() == "late"
        await producer

        async def cancelled_then_served() -> str:
            try:
                await q.get()
            except asyncio.CancelledError:
                pass  # (the same task goes on: its context keeps what the wait left)
            q.put_nowait("ready")
            return q.get_nowait()

        consumer = asyncio.create_task(cancelled_then_served())
        await asyncio.sleep(0.2)
        consumer.cancel()
        assert await consumer == "ready"

    asyncio.run(main())
    receives = sorted(recorder.messaging("receive"), key=lambda r: r.start_time)
    late, ready = (r.attributes["procscope.messaging.block_time"] for r in receives)
    assert late >= 0.15
    assert ready < 0.1


def test_a_queue_copied_or_pickled_carries_nothing_of_procscope(recorder: Any) -> None:
    """An asyncio.Queue made while traced copies and pickles as one made without: its
    waiting getters are a plain deque in the copy."""
    import collections
    import copy
    import pickle

    q: asyncio.Queue[int] = asyncio.Queue(maxsize=3)
    for made in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert type(made._getters) is collections.deque  # type: ignore[attr-defined]
        assert made.maxsize == 3
