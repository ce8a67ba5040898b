"""Threads, Timer and ThreadPoolExecutor: spans, context, errors, levels, sampling."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode


def test_thread_span_is_child_of_the_starter_with_thread_attributes(memory: Any) -> None:
    """A thread's span has the starting span as parent and the thread's own id and name."""
    seen: dict[str, Any] = {}

    def work() -> None:
        seen["native_id"] = threading.get_native_id()
        seen["current"] = trace.get_current_span().get_span_context().span_id

    with memory.tracer().start_as_current_span("starter") as starter:
        thread = threading.Thread(target=work, name="worker-a", daemon=True)
        thread.start()
        thread.join()
    (span,) = memory.spans("thread")
    assert span.name == "thread worker-a"
    assert span.parent is not None and span.parent.span_id == starter.get_span_context().span_id
    assert span.attributes["thread.id"] == seen["native_id"]
    assert span.attributes["thread.name"] == "worker-a"
    assert span.attributes["procscope.thread.daemon"] is True
    assert span.attributes["procscope.lifecycle.role"] == "run"
    # Inside the thread, the thread's span is the current span.
    assert seen["current"] == span.context.span_id


def test_thread_exception_is_recorded_and_the_excepthook_still_runs(
    memory: Any, thread_failures: list[Any]
) -> None:
    """An unhandled exception: ERROR span with an exception event; threading.excepthook too."""
    hooked = thread_failures

    def fail() -> None:
        raise KeyError("lost")

    thread = threading.Thread(target=fail, name="failing")
    thread.start()
    thread.join()
    (span,) = memory.spans("thread")
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "KeyError"
    assert len(hooked) == 1 and isinstance(hooked[0], KeyError)


def test_timer_runs_in_the_context_where_it_was_started(memory: Any) -> None:
    """threading.Timer is a thread too: span, and the starter's context inside."""
    inside: list[int] = []
    with memory.tracer().start_as_current_span("arming") as arming:
        timer = threading.Timer(
            0.01, lambda: inside.append(trace.get_current_span().get_span_context().trace_id)
        )
        timer.start()
        timer.join()
    (span,) = memory.spans("thread")
    assert span.parent.span_id == arming.get_span_context().span_id
    assert inside == [arming.get_span_context().trace_id]


def test_thread_pool_calls_get_spans_under_the_submitter(memory: Any) -> None:
    """Each ThreadPoolExecutor call: a pool_task span under the code that submitted it."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        with memory.tracer().start_as_current_span("submitter") as submitter:
            futures = [pool.submit(pow, 2, n) for n in range(3)]
            failing = pool.submit(int, "not a number")
        assert [f.result() for f in futures] == [1, 2, 4]
        with pytest.raises(ValueError, match="not a number"):
            failing.result()
    tasks = memory.spans("pool_task")
    assert len(tasks) == 4
    assert {s.parent.span_id for s in tasks} == {submitter.get_span_context().span_id}
    assert {s.attributes["procscope.pool.kind"] for s in tasks} == {"thread_pool_executor"}
    errors = [s for s in tasks if s.status.status_code is StatusCode.ERROR]
    assert len(errors) == 1 and errors[0].attributes["procscope.task.function"] == "builtins.int"
    # The executor's own worker threads are housekeeping: no thread spans.
    assert memory.spans("thread") == []


def test_errors_mode_makes_spans_only_for_failed_threads(
    instrument: Any, thread_failures: list[Any]
) -> None:
    """spans="errors": no span for a thread that ends well, one for a thread that fails."""
    memory = instrument(spans="errors")
    inner: list[Any] = []

    def ok() -> None:
        with memory.tracer().start_as_current_span("inside") as span:
            inner.append(span)

    def bad() -> None:
        raise RuntimeError("bad")

    with memory.tracer().start_as_current_span("starter") as starter:
        for target in (ok, bad):
            thread = threading.Thread(target=target, name=target.__name__)
            thread.start()
            thread.join()
    (span,) = memory.spans("thread")
    assert span.name == "thread bad"
    assert span.attributes["procscope.lifecycle.error_only"] is True
    assert span.parent.span_id == starter.get_span_context().span_id
    assert span.start_time < span.end_time
    # Context still propagates: the span made in the thread is under the starter.
    assert inner[0].parent.span_id == starter.get_span_context().span_id


@pytest.mark.parametrize(
    ("level", "expected"), [("minimal", ["thread bad"]), ("messages_only", [])]
)
def test_level_decides_which_thread_spans_exist(
    memory: Any, set_level: Any, thread_failures: list[Any], level: str, expected: list[str]
) -> None:
    """minimal: failed threads only; messages_only: no lifecycle span, context kept."""
    set_level(level)
    trace_ids: list[int] = []

    def ok() -> None:
        trace_ids.append(trace.get_current_span().get_span_context().trace_id)

    def bad() -> None:
        raise RuntimeError("bad")

    with memory.tracer().start_as_current_span("starter") as starter:
        for target in (ok, bad):
            thread = threading.Thread(target=target, name=target.__name__)
            thread.start()
            thread.join()
    assert [s.name for s in memory.spans("thread")] == expected
    assert trace_ids == [starter.get_span_context().trace_id]


def test_unsampled_root_gives_threads_no_span_but_one_unsampled_trace(
    memory: Any, set_level: Any
) -> None:
    """A thread whose new trace the gate drops gets no span, and carries an unsampled
    context so that what it starts is not sampled either (its children do not draw
    again). (At rate 0 nothing can draw: no context is made, as with spans=errors.)"""
    set_level("full", sample_rate=1e-12)
    inside: list[Any] = []

    def work() -> None:
        inside.append(trace.get_current_span().get_span_context())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert memory.spans() == []
    (context,) = inside
    assert context.is_valid and not context.trace_flags.sampled


def test_failure_is_recorded_when_the_program_replaces_threading_excepthook_later(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A threading.excepthook set after instrument() runs, and the failure still has its span."""
    memory = instrument(spans="errors")
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))

    def bad() -> None:
        raise ValueError("late hook")

    thread = threading.Thread(target=bad, name="bad")
    thread.start()
    thread.join()
    assert [type(exc) for exc in seen] == [ValueError]
    (span,) = memory.spans("thread")
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes["exception.message"] == "late hook"


def test_uninstrument_gives_threading_excepthook_back(instrument: Any) -> None:
    """instrument() chains in front of threading.excepthook; uninstrument() restores it."""
    from procscope.instrumentation.lifecycle import LifecycleInstrumentor

    LifecycleInstrumentor().uninstrument()
    before = threading.excepthook
    instrument(spans="errors")
    assert threading.excepthook is not before
    LifecycleInstrumentor().uninstrument()
    assert threading.excepthook is before


class _OddModule:
    """A callable whose ``__module__`` is not a string, nor even hashable."""

    __module__ = ["not", "a", "string"]  # type: ignore[assignment]

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def __call__(self) -> None:
        self.seen.append(trace.get_current_span().get_span_context().span_id)


class _RunOverridden(threading.Thread):
    def __init__(self, seen: list[int]) -> None:
        super().__init__(name="overridden")
        self.seen = seen

    def run(self) -> None:
        self.seen.append(trace.get_current_span().get_span_context().span_id)


def test_threads_with_odd_targets_run_in_the_starters_context_with_their_spans(
    memory: Any,
) -> None:
    """A target with an unhashable __module__, and a subclass with no target: each runs,
    under the starter's context, with its thread span, and nothing is logged as an error."""
    seen: list[int] = []
    with memory.tracer().start_as_current_span("starter"):
        for thread in (threading.Thread(target=_OddModule(seen), name="odd"), _RunOverridden(seen)):
            thread.start()
            thread.join()
    spans = {s.name: s for s in memory.spans("thread")}
    assert sorted(spans) == ["thread odd", "thread overridden"]
    # Inside each thread its own span is current.
    assert seen == [spans["thread odd"].context.span_id, spans["thread overridden"].context.span_id]


def test_library_helper_threads_get_context_but_no_span(memory: Any) -> None:
    """A thread running a concurrent.futures function (housekeeping) carries the starter's
    context but makes no thread span, also on the second start (the cached decision)."""
    import concurrent.futures.thread as cft

    seen: list[int] = []

    def helper() -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    helper.__module__ = cft.__name__
    with memory.tracer().start_as_current_span("starter") as starter:
        for _ in range(2):
            thread = threading.Thread(target=helper)
            thread.start()
            thread.join()
    assert memory.spans("thread") == []
    assert seen == [starter.get_span_context().span_id] * 2


class _HostileCallable:
    """A callable whose every attribute lookup but ``__call__`` fails with a ValueError."""

    def __init__(self, ran: list[bool]) -> None:
        object.__setattr__(self, "_ran", ran)

    def __getattribute__(self, name: str) -> Any:
        if name in ("__call__", "_ran", "__class__"):
            return object.__getattribute__(self, name)
        raise ValueError(f"no {name} here")

    def __call__(self) -> None:
        object.__getattribute__(self, "_ran").append(True)


def test_a_target_whose_attributes_raise_still_runs_with_its_span(memory: Any) -> None:
    """A target that raises ValueError on __module__: the thread runs, traced as any other."""
    ran: list[bool] = []
    thread = threading.Thread(target=_HostileCallable(ran), name="hostile")
    thread.start()
    thread.join()
    assert ran == [True]
    assert [s.name for s in memory.spans("thread")] == ["thread hostile"]
