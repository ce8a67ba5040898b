"""The tail processor's mechanics: completeness, waits, late spans, memory limits, threads, ends."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, TraceState

from procscope.processors.sampling import (
    PROBABILITY_ATTRIBUTE,
    AnyOf,
    ErrorPolicy,
    ProbabilisticPolicy,
    SpanCountPolicy,
    TailSamplingProcessor,
)


def wait_for(condition, timeout: float = 10.0) -> bool:
    """Poll until condition() is true (the decision-wait thread works on its own time)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def keep_all():
    return ProbabilisticPolicy(1.0)


def test_trace_waits_for_children_that_outlive_the_root(pipeline) -> None:
    """The decision waits until every started span has ended, even after the root ended."""
    p = pipeline(keep_all())
    root = p.tracer.start_span("root")
    from opentelemetry.trace import set_span_in_context

    child = p.tracer.start_span("child", context=set_span_in_context(root))
    root.end()
    assert p.spans() == [] and p.processor.stats().buffered_spans == 1
    child.end()
    assert sorted(s.name for s in p.spans()) == ["child", "root"]
    assert p.processor.stats().decided_complete == 1


def test_no_decision_before_the_local_root_ends(pipeline) -> None:
    """Children ending first are buffered; the trace is decided when its root ends."""
    p = pipeline(SpanCountPolicy(3))
    with p.tracer.start_as_current_span("root"):
        for name in ("a", "b"):
            with p.tracer.start_as_current_span(name):
                pass
        assert p.processor.stats().buffered_spans == 2
    assert len(p.spans()) == 3  # decided on all 3: SpanCountPolicy(3) matched


def test_decision_wait_decides_an_unfinished_trace(pipeline) -> None:
    """A trace whose root never ends is decided by the background thread after the wait."""
    p = pipeline(keep_all(), decision_wait_seconds=0.05)
    from opentelemetry.trace import set_span_in_context

    root = p.tracer.start_span("forever")
    p.tracer.start_span("done", context=set_span_in_context(root)).end()
    assert wait_for(lambda: p.processor.stats().decided_on_timeout == 1)
    assert [s.name for s in p.spans()] == ["done"]
    root.end()  # a late span now: it follows the "keep" decision
    stats = p.processor.stats()
    assert stats.late_spans == 1 and stats.late_kept_spans == 1
    assert sorted(s.name for s in p.spans()) == ["done", "forever"]


def test_late_span_of_a_dropped_trace_is_dropped_and_counted(pipeline) -> None:
    """After a "drop" decision, a late span is dropped too, and counted as late."""
    p = pipeline(ProbabilisticPolicy(0.0), decision_wait_seconds=0.05)
    from opentelemetry.trace import set_span_in_context

    root = p.tracer.start_span("root")
    p.tracer.start_span("early", context=set_span_in_context(root)).end()
    assert wait_for(lambda: p.processor.stats().dropped_traces == 1)
    root.end()
    stats = p.processor.stats()
    assert p.spans() == []
    assert stats.late_spans == 1 and stats.dropped_spans == 2 and stats.kept_spans == 0


def test_late_error_rescues_the_rest_of_a_dropped_trace(pipeline) -> None:
    """A late span with an error turns a dropped trace into a kept one for its later spans."""
    p = pipeline(ProbabilisticPolicy(0.0), decision_wait_seconds=0.05)
    from opentelemetry.trace import set_span_in_context

    root = p.tracer.start_span("root")
    ctx = set_span_in_context(root)
    p.tracer.start_span("before", context=ctx).end()
    assert wait_for(lambda: p.processor.stats().dropped_traces == 1)
    failing = p.tracer.start_span("crash", context=ctx)
    failing.set_status(StatusCode.ERROR, "boom")
    failing.end()
    root.end()
    assert sorted(s.name for s in p.spans()) == ["crash", "root"]
    stats = p.processor.stats()
    assert stats.upgraded_traces == 1 and stats.late_spans == 2


def test_span_starting_after_its_trace_was_decided_follows_the_decision(pipeline) -> None:
    """A second local root of an already kept trace (a later message, say) is passed on as late."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    p = pipeline(keep_all())
    remote = set_span_in_context(NonRecordingSpan(SpanContext(42, 1, True, TraceFlags(1))))
    p.tracer.start_span("first", context=remote).end()
    p.tracer.start_span("second", context=remote).end()
    assert [s.name for s in p.spans()] == ["first", "second"]
    assert p.processor.stats().late_spans == 1


def test_decision_memory_forgets_the_oldest_traces_first(pipeline) -> None:
    """Past max_remembered_decisions the oldest decisions are forgotten, the newest kept."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    p = pipeline(keep_all(), max_remembered_decisions=3)

    def remote(trace_id: int):
        return set_span_in_context(NonRecordingSpan(SpanContext(trace_id, 1, True, TraceFlags(1))))

    for trace_id in range(1, 9):  # 8 decided traces through a memory of 3, twice over
        p.tracer.start_span("first", context=remote(trace_id)).end()
    assert p.processor.stats().kept_traces == 8
    p.tracer.start_span("again", context=remote(8)).end()  # remembered: a late span
    assert p.processor.stats().late_spans == 1
    p.tracer.start_span("again", context=remote(1)).end()  # forgotten: a trace of its own
    stats = p.processor.stats()
    assert stats.late_spans == 1 and stats.kept_traces == 9
    assert len(p.spans()) == 10


def test_memory_limit_decides_oldest_traces_early_and_loses_none(pipeline) -> None:
    """Over max_buffered_spans the oldest open traces are decided early; no span is lost."""
    p = pipeline(keep_all(), max_buffered_spans=50, decision_wait_seconds=60)
    from opentelemetry.trace import set_span_in_context

    roots = [p.tracer.start_span(f"root{i}") for i in range(20)]
    for root in roots:  # 20 open traces, 5 finished children each = 100 spans > 50
        for _ in range(5):
            p.tracer.start_span("child", context=set_span_in_context(root)).end()
    stats = p.processor.stats()
    assert stats.decided_early >= 1
    assert stats.buffered_spans <= 50
    early_ids = {s.context.trace_id for s in p.spans()}
    # The oldest traces went first.
    assert roots[0].get_span_context().trace_id in early_ids
    assert roots[-1].get_span_context().trace_id not in early_ids
    for root in roots:
        root.end()
    p.processor.force_flush()
    stats = p.processor.stats()
    assert stats.kept_spans == 120 and stats.dropped_spans == 0
    assert len(p.spans()) == 120


def test_trace_count_limit_decides_oldest_traces_early(pipeline) -> None:
    """Over max_buffered_traces, the oldest traces are decided early."""
    p = pipeline(keep_all(), max_buffered_traces=10, decision_wait_seconds=60)
    roots = [p.tracer.start_span(f"r{i}") for i in range(25)]
    assert p.processor.stats().buffered_traces <= 10
    assert p.processor.stats().decided_early >= 15
    for root in roots:
        root.end()
    assert len(p.spans()) == 25


def test_one_huge_trace_cannot_starve_the_others(pipeline) -> None:
    """A trace over max_spans_per_trace is decided alone; small traces stay buffered and whole."""
    p = pipeline(
        SpanCountPolicy(1),
        max_buffered_spans=1000,
        max_spans_per_trace=100,
        decision_wait_seconds=60,
    )
    from opentelemetry.trace import set_span_in_context

    small = p.tracer.start_span("small")
    p.tracer.start_span("small.child", context=set_span_in_context(small)).end()
    huge = p.tracer.start_span("huge")
    for _ in range(500):
        p.tracer.start_span("huge.child", context=set_span_in_context(huge)).end()
    stats = p.processor.stats()
    assert stats.buffered_traces == 1  # small; huge was decided at its 100th span
    assert stats.decided_early == 1
    assert stats.late_spans == 400  # huge's later spans followed its decision
    small.end()
    names = [s.name for s in p.spans()]
    assert names.count("small") == 1 and names.count("small.child") == 1
    huge.end()
    p.processor.force_flush()
    assert len(p.spans()) == 503


def test_force_flush_decides_pending_traces(pipeline) -> None:
    """force_flush decides every buffered trace now and flushes the next processor."""
    p = pipeline(keep_all(), decision_wait_seconds=60)
    from opentelemetry.trace import set_span_in_context

    root = p.tracer.start_span("open")
    p.tracer.start_span("child", context=set_span_in_context(root)).end()
    assert p.processor.force_flush(5000)
    assert [s.name for s in p.spans()] == ["child"]
    assert p.processor.stats().decided_at_flush == 1


def test_shutdown_decides_pending_stops_the_thread_and_shuts_down_next() -> None:
    """shutdown() decides what is buffered, stops the wait thread and shuts the next processor."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import set_span_in_context

    exporter = InMemorySpanExporter()
    processor = TailSamplingProcessor(SimpleSpanProcessor(exporter), keep_all())
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    root = tracer.start_span("open")
    tracer.start_span("child", context=set_span_in_context(root)).end()
    worker = processor._worker
    assert worker is not None and worker.daemon and worker.is_alive()
    provider.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["child"]
    worker.join(5)
    assert not worker.is_alive()
    # The next processor was shut down: its exporter refuses more spans.
    assert exporter.export([]) is SpanExportResult.FAILURE
    root.end()  # after shutdown: ignored (and counted), never raised into the program
    assert processor.stats().ignored_after_shutdown == 1


def test_exporter_is_put_behind_a_batch_processor() -> None:
    """Given an exporter, the processor passes kept spans to a BatchSpanProcessor in front of it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = InMemorySpanExporter()
    processor = TailSamplingProcessor(exporter, keep_all())
    assert isinstance(processor.next_processor, BatchSpanProcessor)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("s").end()
    provider.force_flush()
    assert [s.name for s in exporter.get_finished_spans()] == ["s"]
    provider.shutdown()
    with pytest.raises(TypeError):
        TailSamplingProcessor(object())  # type: ignore[arg-type]


class LockWatchingProcessor(SpanProcessor):
    """A next processor that notes whether the tail processor's lock was held when called."""

    def __init__(self) -> None:
        self.tail: TailSamplingProcessor | None = None
        self.held: list[bool] = []
        self.started = 0

    def on_start(self, span, parent_context=None) -> None:
        self.started += 1
        assert self.tail is not None
        self.held.append(self.tail._lock.locked())

    def on_end(self, span) -> None:
        assert self.tail is not None
        self.held.append(self.tail._lock.locked())


def test_next_processor_and_callbacks_never_run_under_our_lock() -> None:
    """The wrapped processor and on_decision are called with the tail processor's lock free."""
    from opentelemetry.sdk.trace import TracerProvider

    watcher = LockWatchingProcessor()
    callback_held: list[bool] = []
    tail = TailSamplingProcessor(
        watcher, keep_all(), on_decision=lambda d: callback_held.append(tail._lock.locked())
    )
    watcher.tail = tail
    provider = TracerProvider()
    provider.add_span_processor(tail)
    tracer = provider.get_tracer("t")
    for _ in range(20):
        with tracer.start_as_current_span("root"):
            with tracer.start_as_current_span("child"):
                pass
    provider.shutdown()
    assert watcher.started == 40  # on_start is forwarded when the next processor has one
    assert len(watcher.held) == 80 and not any(watcher.held)
    assert len(callback_held) == 20 and not any(callback_held)


def test_on_decision_reports_each_trace(pipeline) -> None:
    """on_decision receives one Decision per trace, with reason, probability and span count."""
    decisions = []
    p = pipeline(AnyOf(ErrorPolicy(), ProbabilisticPolicy(0.0)), on_decision=decisions.append)
    with p.tracer.start_as_current_span("err") as span:
        span.set_status(StatusCode.ERROR)
    with p.tracer.start_as_current_span("ok"):
        pass
    assert [(d.kept, d.probability, d.reason, d.span_count) for d in decisions] == [
        (True, 1.0, "complete", 1),
        (False, None, "complete", 1),
    ]


def test_failing_policy_keeps_the_trace_and_failing_callback_is_contained(
    pipeline, monkeypatch
) -> None:
    """A policy that raises keeps the trace (lose nothing); a raising callback breaks nothing."""
    monkeypatch.setenv("PROCSCOPE_RAISE_INTERNAL_ERRORS", "0")

    def broken_policy(trace):
        raise RuntimeError("policy bug")

    def broken_callback(decision):
        raise RuntimeError("callback bug")

    p = pipeline(broken_policy, on_decision=broken_callback)
    with p.tracer.start_as_current_span("s"):
        pass
    assert [s.name for s in p.spans()] == ["s"]
    assert p.processor.stats().policy_errors == 1


def test_kept_spans_carry_probability_and_tracestate_threshold(pipeline) -> None:
    """Kept spans carry procscope.sampling.probability and ot=th: of the tail's threshold."""
    p = pipeline(ProbabilisticPolicy(0.5), seed=1)
    for _ in range(200):
        with p.tracer.start_as_current_span("root"):
            with p.tracer.start_as_current_span("child"):
                pass
    spans = p.spans()
    assert 50 < len(spans) < 350
    for span in spans:
        assert span.attributes[PROBABILITY_ATTRIBUTE] == 0.5
        assert span.context.trace_state.get("ot") == "th:8"  # 0.5 -> threshold 2**55


def test_tail_threshold_combines_with_the_head_threshold(pipeline) -> None:
    """A head-sampled trace (th for 50%) kept by a 25% tail policy states 25%; rv is kept."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    p = pipeline(AnyOf(ErrorPolicy(), ProbabilisticPolicy(0.25)))
    state = TraceState([("ot", "th:8;rv:f0000000000000")])
    parent = SpanContext(0xABC, 5, True, TraceFlags(1), state)
    p.tracer.start_span("kept", context=set_span_in_context(NonRecordingSpan(parent))).end()
    error_parent = SpanContext(0xDEF, 5, True, TraceFlags(1), TraceState([("ot", "th:8")]))
    with p.tracer.start_as_current_span(
        "error", context=set_span_in_context(NonRecordingSpan(error_parent))
    ) as span:
        span.set_status(StatusCode.ERROR)
    by_name = {s.name: s for s in p.spans()}
    assert by_name["kept"].attributes[PROBABILITY_ATTRIBUTE] == 0.25
    assert by_name["kept"].context.trace_state.get("ot") == "th:c;rv:f0000000000000"
    # An error trace is kept by the tail for sure; the head's 50% still applies to it.
    assert by_name["error"].attributes[PROBABILITY_ATTRIBUTE] == 0.5
    assert by_name["error"].context.trace_state.get("ot") == "th:8"


def test_kept_span_copy_leaves_other_processors_view_alone(pipeline) -> None:
    """The probability goes on our copy: another processor of the provider sees no change."""
    p = pipeline(keep_all())
    other = InMemorySpanExporter()
    p.provider.add_span_processor(SimpleSpanProcessor(other))
    with p.tracer.start_as_current_span("s", attributes={"a": 1}):
        pass
    assert dict(p.spans()[0].attributes) == {"a": 1, PROBABILITY_ATTRIBUTE: 1.0}
    assert dict(other.get_finished_spans()[0].attributes) == {"a": 1}


def test_concurrent_threads_lose_no_span(pipeline) -> None:
    """8 real threads making traces at once: every span is kept or dropped by decision."""
    p = pipeline(AnyOf(ErrorPolicy(), ProbabilisticPolicy(0.5)), max_buffered_spans=300)
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(300):
            with p.tracer.start_as_current_span(f"t{index}"):
                with p.tracer.start_as_current_span("child") as child:
                    if i % 50 == 0:
                        child.set_status(StatusCode.ERROR)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.processor.force_flush()
    stats = p.processor.stats()
    assert stats.kept_spans + stats.dropped_spans == 8 * 300 * 2
    assert stats.kept_traces + stats.dropped_traces == 8 * 300
    assert stats.kept_spans == len(p.spans())
    errors = [s for s in p.spans() if s.status.status_code is StatusCode.ERROR]
    assert len(errors) == 8 * 6  # every error trace kept
    # Traces are kept whole.
    per_trace: dict[int, int] = {}
    for span in p.spans():
        per_trace[span.context.trace_id] = per_trace.get(span.context.trace_id, 0) + 1
    assert set(per_trace.values()) == {2}


def test_new_traces_added_without_the_lock_race_evictions_and_timeouts(pipeline) -> None:
    """Threads add new traces (no lock) while evictions and the wait thread close others."""
    p = pipeline(ProbabilisticPolicy(0.5), max_buffered_traces=20, decision_wait_seconds=0.001)
    barrier = threading.Barrier(4)

    def work() -> None:
        from opentelemetry.trace import set_span_in_context

        barrier.wait()
        for _ in range(12):
            roots = [p.tracer.start_span("root") for _ in range(25)]  # over the limit alone
            for root in roots:
                p.tracer.start_span("child", context=set_span_in_context(root)).end()
            for root in roots:
                root.end()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.processor.force_flush()
    stats = p.processor.stats()
    assert stats.buffered_spans == 0 and stats.buffered_traces == 0
    assert stats.kept_spans + stats.dropped_spans == 4 * 12 * 25 * 2  # each span once
    assert stats.kept_spans == len(p.spans())
    assert stats.decided_early > 0 and stats.late_spans > 0  # the races did happen


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_fork_child_starts_empty_and_works(pipeline) -> None:
    """After os.fork the child's processor holds none of the parent's buffers and still decides."""
    p = pipeline(keep_all(), decision_wait_seconds=60)
    from opentelemetry.trace import set_span_in_context

    root = p.tracer.start_span("parent-open")
    p.tracer.start_span("parent-child", context=set_span_in_context(root)).end()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's atexit hooks
        code = 1
        try:
            before = p.processor.stats()
            with p.tracer.start_as_current_span("in-child"):
                pass
            names = sorted(s.name for s in p.spans())
            ok = (
                before.buffered_spans == 0
                and before.buffered_traces == 0
                and "in-child" in names
                and p.processor._lock.acquire(timeout=1)
            )
            os.write(write_fd, b"ok" if ok else repr((before, names)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 4096)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert message == b"ok" and os.WEXITSTATUS(status) == 0
    assert p.processor.stats().buffered_spans == 1  # the parent's buffer is untouched
    root.end()
    assert sorted(s.name for s in p.spans()) == ["parent-child", "parent-open"]


def test_shutdown_budget_drops_undecided_traces_counted_and_said(caplog) -> None:
    """With a slow policy, shutdown stops deciding at its budget; the rest are counted, logged."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import set_span_in_context

    def slow_policy(trace) -> bool:
        time.sleep(0.1)
        return True

    exporter = InMemorySpanExporter()
    processor = TailSamplingProcessor(
        SimpleSpanProcessor(exporter), slow_policy, shutdown_timeout_millis=250
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    roots = [tracer.start_span(f"open{i}") for i in range(10)]
    for root in roots:
        tracer.start_span("child", context=set_span_in_context(root)).end()
    with caplog.at_level("WARNING", logger="procscope"):
        started = time.monotonic()
        processor.shutdown()
        elapsed = time.monotonic() - started
    stats = processor.stats()
    assert stats.kept_traces + stats.dropped_traces == 10
    assert 1 <= stats.kept_traces < 10  # some decided in time, not all
    assert stats.dropped_spans == 10 - stats.kept_traces
    assert len(exporter.get_finished_spans()) == stats.kept_traces  # passed on before the end
    assert "ran out of its shutdown budget" in caplog.text
    assert elapsed < 5  # bounded by the budget, not by 10 slow decisions


@pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="from 3.12 a collection runs between bytecodes, never inside a C-level read",
)
def test_reading_the_oldest_traces_survives_an_insert_during_a_collection() -> None:
    """A garbage collection inside the read of the buffered traces can run another
    thread's code, which may add a trace: the read is made again, not failed (seen once
    under load as "dictionary changed size during iteration" in the eviction)."""
    import gc

    from procscope.processors.sampling._processor import _oldest

    traces = {n: f"trace-{n}" for n in range(200)}
    collections: list[int] = []
    added: list[int] = []

    def insert(phase: str, info: dict[str, int]) -> None:
        # The second collection of the read comes after its dict iterator is made (the
        # first, at the view's allocation, before): the insert then breaks the iteration.
        if phase == "start":
            collections.append(1)
            if len(collections) == 2:
                added.append(1)
                traces[10_000] = "new"

    threshold = gc.get_threshold()
    gc.callbacks.append(insert)
    gc.set_threshold(1)
    try:
        got = _oldest(traces, 64)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(insert)
    assert added, "no collection ran during the read"
    assert got == tuple(f"trace-{n}" for n in range(64))
