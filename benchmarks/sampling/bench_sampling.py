"""Tail sampling: overhead per span on top of the SDK, memory per buffered span, decisions/s.

Run: .venv/bin/python benchmarks/sampling/bench_sampling.py [--quick]

1. Overhead per span: the same traces (a lone root; a root and 1 child; a root and 4
   children, nested as current spans; a root and 19 children: the per-trace costs spread
   over more spans as traces grow)
   1b. the same with a BatchSpanProcessor (no-op exporter) downstream, as in procscope's
   own pipeline: what the dropped spans no longer cost there offsets part of ours
   through a real SDK TracerProvider whose processor is
     sdk       a counting processor (the SDK alone, plus the cheapest possible processor)
     tail-all  TailSamplingProcessor(counting processor), policy keeps every trace
     tail-1%   TailSamplingProcessor(counting processor), default policy at 1%
   Rounds are interleaved and the median per configuration is taken (a shared 2-core
   machine is noisy); each round is timed in CPU time of this process (time.process_time,
   all threads), so that other programs' use of the CPU does not count, and in CPU time
   of the calling thread (time.thread_time): what the program itself waits.
   Each tail processor has first decided 51,000 traces, so that its decision memory is
   full, as in a program that has run for a while (steady state).
   Overhead = (median - sdk median) / spans. Goal: <= 1 us per span.
2. Memory per buffered span (tracemalloc): what the processor adds to hold an already
   made span (the span object itself is the SDK's; its size is shown for context).
   Goal: <= 500 bytes.
3. Decisions per second: complete 5-span traces fed through on_start/on_end.
4. The head gate, head_sampling.should_record(), per call, next to the public-API
   version it replaced.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from procscope.core import head_sampling, shared_state
from procscope.processors.sampling import (
    ProbabilisticPolicy,
    TailSamplingProcessor,
    default_policy,
)

QUICK = "--quick" in sys.argv
SPANS_PER_TRACE = 5


class Counting(SpanProcessor):
    """The cheapest downstream: counts what reaches it."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class Keep(SpanProcessor):
    """Keeps ended spans, to feed them to a processor afterwards."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def make_tracer(processor: SpanProcessor) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, provider.get_tracer("bench")


def run_traces(
    tracer: Any, count: int, spans_per_trace: int = SPANS_PER_TRACE
) -> tuple[float, float]:
    """(CPU time of the whole process, CPU time of this thread) to make ``count`` traces.

    CPU time, not wall time: on a shared machine the time other processes take the CPU
    away from us is not ours to count. The process figure includes every thread (the
    tail processor's decision-wait thread, a BatchSpanProcessor's worker), so work moved
    off the calling thread still counts there; the thread figure is what the caller waits.
    """
    start_span = tracer.start_as_current_span
    process_started, thread_started = time.process_time(), time.thread_time()
    for _ in range(count):
        with start_span("root"):
            for _ in range(spans_per_trace - 1):
                with start_span("child"):
                    pass
    return time.process_time() - process_started, time.thread_time() - thread_started


def fill_decision_memory(processor: TailSamplingProcessor, count: int) -> None:
    """Decide ``count`` one-span traces, so that the decision memory is full (steady state).

    A program that runs for a while has decided more traces than the processor remembers
    (50,000 by default); from then on, each decision also forgets the oldest one.
    """
    resource = Resource.get_empty()  # without one, each ReadableSpan runs the detectors
    for trace_id in range(1, count + 1):
        context = SpanContext(trace_id << 64, 1, False, TraceFlags(1))
        span = ReadableSpan(
            name="fill", context=context, resource=resource, start_time=1, end_time=2
        )
        processor.on_start(span)  # type: ignore[arg-type]
        processor.on_end(span)


class NullExporter(SpanExporter):
    """Accepts every batch and does nothing: the export cost itself is left out."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _overhead_configs(with_batch: bool) -> dict[str, Any]:
    def downstream() -> SpanProcessor:
        if with_batch:  # a queue big enough that no span is dropped in a round
            return BatchSpanProcessor(NullExporter(), max_queue_size=200_000)
        return Counting()

    def tail(policy: Any) -> TailSamplingProcessor:
        processor = TailSamplingProcessor(downstream(), policy, max_buffered_spans=100_000)
        fill_decision_memory(processor, 51_000)
        return processor

    suffix = "+batch" if with_batch else ""
    return {
        "sdk" + suffix: make_tracer(downstream()),
        "tail-all" + suffix: make_tracer(tail(ProbabilisticPolicy(1.0))),
        "tail-1%" + suffix: make_tracer(tail(default_policy(0.01))),
    }


def bench_overhead(spans_per_trace: int, with_batch: bool = False) -> list[tuple[str, str]]:
    traces = (600 if QUICK else 1000) * SPANS_PER_TRACE // spans_per_trace
    rounds = 9 if QUICK else 21
    configs = _overhead_configs(with_batch)
    process: dict[str, list[float]] = {name: [] for name in configs}
    thread: dict[str, list[float]] = {name: [] for name in configs}
    for _, tracer in configs.values():  # warm-up
        run_traces(tracer, 200, spans_per_trace)
    for _ in range(rounds):
        for name, (_, tracer) in configs.items():
            gc.collect()
            cpu, own = run_traces(tracer, traces, spans_per_trace)
            process[name].append(cpu)
            thread[name].append(own)
    spans = traces * spans_per_trace
    base_name = next(iter(configs))
    base = statistics.median(process[base_name]) / spans
    base_thread = statistics.median(thread[base_name]) / spans
    rows = []
    for name in configs:
        per_span = statistics.median(process[name]) / spans
        per_span_thread = statistics.median(thread[name]) / spans
        rows.append(
            (
                name,
                f"{per_span * 1e6:8.2f} us/span   overhead {(per_span - base) * 1e6:+6.2f} us/span"
                f" process CPU ({per_span / base:5.2f}x),"
                f" {(per_span_thread - base_thread) * 1e6:+6.2f} us/span calling thread",
            )
        )
    for provider, _ in configs.values():
        provider.shutdown()
    return rows


def made_spans(count_traces: int) -> list[list[ReadableSpan]]:
    """Real ended spans, grouped by trace: 4 children then the root (SDK order of ending)."""
    keep = Keep()
    provider, tracer = make_tracer(keep)
    run_traces(tracer, count_traces)
    provider.shutdown()
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in keep.spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    return list(by_trace.values())


def bench_memory() -> list[tuple[str, str]]:
    count_traces = 2000 if QUICK else 6000
    # The span objects themselves, for context.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    groups = made_spans(count_traces)
    span_bytes = (tracemalloc.get_traced_memory()[0] - before) / (count_traces * SPANS_PER_TRACE)
    tracemalloc.stop()
    children = [span for group in groups for span in group if span.parent is not None]
    roots = [span for group in groups for span in group if span.parent is None]
    processor = TailSamplingProcessor(
        Counting(),
        ProbabilisticPolicy(1.0),
        decision_wait_seconds=3600,
        max_buffered_spans=10**7,
        max_buffered_traces=10**7,
        max_spans_per_trace=10**7,
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    on_start, on_end = processor.on_start, processor.on_end
    for span in roots:  # the roots start and never end here: every trace stays buffered
        on_start(span)  # type: ignore[arg-type]
    for span in children:
        on_start(span)  # type: ignore[arg-type]
        on_end(span)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = processor.stats()
    assert stats.buffered_spans == len(children), stats
    processor.shutdown()
    return [
        ("buffered", f"{len(children)} spans in {stats.buffered_traces} traces"),
        ("added by the processor", f"{held / len(children):8.0f} bytes per buffered span"),
        ("the SDK's span itself", f"{span_bytes:8.0f} bytes per span (made by the SDK anyway)"),
    ]


def bench_decisions() -> list[tuple[str, str]]:
    count_traces = 3000 if QUICK else 6000
    groups = made_spans(count_traces)
    rows = []
    for name, policy in (
        ("default policy at 1%", default_policy(0.01)),
        ("keep all", ProbabilisticPolicy(1.0)),
    ):
        best = float("inf")
        for _ in range(3 if QUICK else 5):
            processor = TailSamplingProcessor(Counting(), policy, max_buffered_spans=10**6)
            on_start, on_end = processor.on_start, processor.on_end
            started = time.perf_counter()
            for group in groups:
                for span in group:
                    on_start(span)  # type: ignore[arg-type]
                for span in group:
                    on_end(span)
            elapsed = time.perf_counter() - started
            assert processor.stats().decided_complete == len(groups)
            processor.shutdown()
            best = min(best, elapsed)
        rows.append(
            (
                name,
                f"{len(groups) / best:10,.0f} traces decided/s  "
                f"({best / (len(groups) * SPANS_PER_TRACE) * 1e6:.2f} us per span, "
                "start+end+decision, no SDK)",
            )
        )
    return rows


def old_should_record() -> bool:
    """The gate as it was before (public API, random.random), for comparison."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return bool(span_context.trace_flags.sampled)
    rate = shared_state.settings().sample_rate
    if rate >= 1.0:
        return True
    return rate > 0.0 and random.random() < rate


def bench_gate() -> list[tuple[str, str]]:
    live = shared_state.settings()
    live.sample_rate = 0.01
    calls = 100_000 if QUICK else 200_000
    rows = []
    provider, tracer = make_tracer(Counting())
    for where in ("no current span (new root)", "inside a sampled span"):
        results: dict[str, list[float]] = {"new": [], "old": []}
        for _ in range(5):
            for name, gate in (
                ("new", head_sampling.should_record),
                ("old", old_should_record),
            ):
                if where.startswith("inside"):
                    with tracer.start_as_current_span("outer"):
                        started = time.perf_counter()
                        for _ in range(calls):
                            gate()
                        results[name].append(time.perf_counter() - started)
                else:
                    started = time.perf_counter()
                    for _ in range(calls):
                        gate()
                    results[name].append(time.perf_counter() - started)
                head_sampling.take_root_randomness()
        new = statistics.median(results["new"]) / calls * 1e9
        old = statistics.median(results["old"]) / calls * 1e9
        rows.append((where, f"should_record {new:6.0f} ns/call   (public-API gate {old:6.0f} ns)"))
    provider.shutdown()
    live.sample_rate = 1.0
    return rows


def table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main() -> None:
    started = time.perf_counter()
    print(f"Python {sys.version.split()[0]}; {'quick' if QUICK else 'full'} run")
    for spans_per_trace in (1, 2, SPANS_PER_TRACE, 20):
        table(
            f"1. Per span, traces of {spans_per_trace} spans, counting downstream "
            "(median of interleaved rounds)",
            bench_overhead(spans_per_trace),
        )
    table(
        f"1b. Per span, traces of {SPANS_PER_TRACE} spans, BatchSpanProcessor(no-op exporter) "
        "downstream",
        bench_overhead(SPANS_PER_TRACE, with_batch=True),
    )
    table("2. Memory per buffered span (tracemalloc)", bench_memory())
    table("3. Decisions per second", bench_decisions())
    table("4. Head gate at sample_rate 0.01", bench_gate())
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
