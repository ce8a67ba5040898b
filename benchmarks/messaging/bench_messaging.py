"""Messaging instrumentor: what tracing messages costs, against the same work untraced.

Three measurements, each interleaving its variants round by round (this machine is small
and shared: medians of interleaved rounds, never a single run):

1. put+get on queue.Queue when the trace is not sampled (sample rate 0 with no current
   span, and inside a current span that is not sampled) against the uninstrumented queue.
   Goal: at most 0.25 us added.
2. one sampled message (producer and consumer spans, exported to a trace DB through a
   BatchSpanProcessor, flush included) against two bare SDK spans exported the same way.
3. a reference pipeline (a producer thread and a producer process, one multiprocessing
   queue, two consumer processes doing about 50 us of work per message, results back on
   a second queue), untraced against procscope.setup() at sample rates 0, 0.01 and 1.0.
   Goal: at most 2 % at 0.01. Each run is a fresh interpreter (setup is once per process);
   only the pipeline itself is timed.

    python benchmarks/messaging/bench_messaging.py [--quick]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

QUICK = "--quick" in sys.argv


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- 1. unsampled put+get ------------------------------------------------------------------

def bench_unsampled() -> list[list[str]]:
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from procscope.instrumentation.messaging import MessagingInstrumentor

    from procscope._common import shared_state

    live = shared_state.settings()
    live.sample_rate = 0.0
    provider = TracerProvider()
    instrumentor = MessagingInstrumentor()
    # Two queues, each made as a program would make it: one before instrument() (never
    # touched by procscope), one while instrumented (with its creation site noted).
    # Reading a queue's __dict__ (which procscope no longer does) makes CPython 3.11/3.12
    # slow every later attribute access of the queue, so sharing one queue between the
    # variants hid that cost from both sides in earlier versions of this benchmark.
    plain_q: queue.Queue[int] = queue.Queue()
    instrumentor.instrument(tracer_provider=provider)
    traced_q: queue.Queue[int] = queue.Queue()
    instrumentor.uninstrument()
    n = 20_000
    rounds = 15 if QUICK else 41
    unsampled_parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(0))
        )
    )

    def run(q: queue.Queue[int]) -> float:
        put, get = q.put, q.get
        started = time.perf_counter()
        for i in range(n):
            put(i)
            get()
        return (time.perf_counter() - started) / n * 1e9

    def run_in_parent(q: queue.Queue[int]) -> float:
        token = context.attach(unsampled_parent)
        try:
            return run(q)
        finally:
            context.detach(token)

    bare: list[float] = []
    rate0: list[float] = []
    in_parent: list[float] = []
    bare_parent: list[float] = []
    for _ in range(rounds):
        bare.append(run(plain_q))
        bare_parent.append(run_in_parent(plain_q))
        instrumentor.instrument(tracer_provider=provider)
        rate0.append(run(traced_q))
        in_parent.append(run_in_parent(traced_q))
        instrumentor.uninstrument()
    b, bp, r0, ip = median(bare), median(bare_parent), median(rate0), median(in_parent)
    return [
        ["put+get, uninstrumented", f"{b:.0f} ns", "", ""],
        ["put+get, unsampled (rate 0, no span)", f"{r0:.0f} ns", f"+{r0 - b:.0f} ns",
         f"{r0 / b:.2f}x"],
        ["put+get, uninstrumented, in a non-sampled span", f"{bp:.0f} ns", "", ""],
        ["put+get, unsampled (in a non-sampled span)", f"{ip:.0f} ns", f"+{ip - bp:.0f} ns",
         f"{ip / bp:.2f}x"],
    ]


# --- 2. one sampled message ------------------------------------------------------------------

def bench_sampled() -> list[list[str]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from procscope.exporters.tracedb import TraceDBSpanExporter
    from procscope.instrumentation.messaging import MessagingInstrumentor

    from procscope._common import shared_state

    shared_state.settings().sample_rate = 1.0
    shared_state.settings().capture_content = True
    folder = tempfile.mkdtemp(prefix="bench-messaging-")
    provider = TracerProvider()
    processor = BatchSpanProcessor(TraceDBSpanExporter(os.path.join(folder, "trace.db")))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    instrumentor = MessagingInstrumentor()
    q: queue.Queue[Any] = queue.Queue()
    n = 1_000
    rounds = 5 if QUICK else 11
    message = {"job": 17, "payload": "x" * 40}

    def traced() -> float:
        started = time.perf_counter()
        for _ in range(n):
            q.put(message)
            q.get()
        processor.force_flush()
        return (time.perf_counter() - started) / n * 1e6

    def two_spans() -> float:
        started = time.perf_counter()
        for _ in range(n):
            q.put(message)
            q.get()
            tracer.start_span("send").end()
            tracer.start_span("receive").end()
        processor.force_flush()
        return (time.perf_counter() - started) / n * 1e6

    def bare() -> float:
        started = time.perf_counter()
        for _ in range(n):
            q.put(message)
            q.get()
        return (time.perf_counter() - started) / n * 1e6

    ours: list[float] = []
    sdk: list[float] = []
    plain: list[float] = []
    from opentelemetry import context

    for _ in range(rounds):
        plain.append(bare())
        sdk.append(two_spans())
        instrumentor.instrument(tracer_provider=provider)
        ours.append(traced())
        instrumentor.uninstrument()
        context.attach(context.Context())  # the consumer context of the last get, gone
    processor.shutdown()
    p, s, o = median(plain), median(sdk), median(ours)
    return [
        ["put+get, uninstrumented", f"{p:.1f} us", "", ""],
        ["put+get + two bare SDK spans (batch, trace DB)", f"{s:.1f} us",
         f"+{s - p:.1f} us", "reference"],
        ["put+get sampled: both spans (batch, trace DB)", f"{o:.1f} us", f"+{o - p:.1f} us",
         f"{(o - p) / (s - p):.2f}x the SDK spans"],
    ]


# --- 3. the reference pipeline ---------------------------------------------------------------

WORK_LOOPS = 0  # calibrated in each run: loops of the busy work that take ~50 us


def busy(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i * i
    return total


def calibrate() -> int:
    loops = 1000
    while True:
        started = time.perf_counter()
        for _ in range(20):
            busy(loops)
        per_call = (time.perf_counter() - started) / 20
        if per_call > 20e-6:
            return max(1, int(loops * 50e-6 / per_call))
        loops *= 2


def consumer(jobs: Any, results: Any, loops: int) -> None:
    cpu_started = None
    while True:
        item = jobs.get()
        if item is None:
            # This process's CPU time over the run (all its threads: the span export too).
            results.put(("cpu", time.process_time() - (cpu_started or 0.0)))
            return
        if cpu_started is None and item >= 0:
            cpu_started = time.process_time()
        results.put((item, busy(loops)))


def producer(jobs: Any, start: int, count: int, go: Any = None, results: Any = None) -> None:
    if go is not None:
        go.wait()
    cpu_started = time.process_time()
    for i in range(start, start + count):
        jobs.put(i)
    if results is not None:
        results.put(("cpu", time.process_time() - cpu_started))


def pipeline_round(mode: str, messages: int, loops: int) -> tuple[float, float]:
    """One timed pipeline run in this (fresh) interpreter: (wall seconds, CPU seconds).

    The CPU time is that of every process of the pipeline over the run (the main process,
    the producer process and both consumers, each measured from its first message),
    which the machine's other load disturbs much less than the wall time.
    """
    if mode != "off":
        import procscope

        folder = tempfile.mkdtemp(prefix="bench-pipeline-")
        procscope.setup(db=os.path.join(folder, "trace.db"), exporter="tracedb",
                        sample_rate=float(mode))
    ctx = mp.get_context("fork")
    jobs, results = ctx.Queue(), ctx.Queue()
    consumers = [ctx.Process(target=consumer, args=(jobs, results, loops)) for _ in range(2)]
    for process in consumers:
        process.start()
    half = messages // 2
    # Warm the consumers (and the queues' feeder threads) before the clock starts.
    jobs.put(-1)
    jobs.put(-2)
    results.get()
    results.get()
    # Every process is started before the clock (process start-up is not messaging).
    go = ctx.Event()
    feeder = ctx.Process(target=producer, args=(jobs, 0, half, go, results))
    feeder.start()
    thread = threading.Thread(target=producer, args=(jobs, half, messages - half, go))
    thread.start()
    time.sleep(0.2)  # the producer process is up and waiting
    cpu = 0.0
    started = time.perf_counter()
    cpu_started = time.process_time()
    go.set()
    received = 0
    while received < messages:
        item = results.get()
        if item[0] == "cpu":
            cpu += item[1]
        else:
            received += 1
    elapsed = time.perf_counter() - started
    cpu += time.process_time() - cpu_started
    thread.join()
    feeder.join()
    for _ in consumers:
        jobs.put(None)
    for _ in consumers:
        item = results.get()
        cpu += item[1]
    for process in consumers:
        process.join()
    if mode != "off":
        import procscope

        procscope.shutdown()
    return elapsed, cpu


def bench_pipeline() -> list[list[str]]:
    messages = 1_000 if QUICK else 4_000
    rounds = 3 if QUICK else 9
    loops = calibrate()
    # sample_rate 0.0: procscope set up, every wrapper in place, nothing sampled; the
    # difference to 0.01 is what the sampled 1 % of the messages cost.
    modes = ["off", "0.0", "0.01", "1.0"]
    walls: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):
        for mode in modes:
            out = subprocess.run(
                [sys.executable, __file__, "--pipeline-round", mode, str(messages), str(loops)],
                capture_output=True, text=True, check=True, timeout=300,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            walls[mode].append(result["seconds"])
            cpus[mode].append(result["cpu"])
    rows = []
    for label, unit, data in (("wall", 1e3, walls), ("CPU", 1e3, cpus)):
        base = median(data["off"])
        rows.append([f"pipeline {label} time, {messages} messages, uninstrumented",
                     f"{base * unit:.0f} ms", "", ""])
        for mode in modes[1:]:
            t = median(data[mode])
            rows.append([f"pipeline {label} time, procscope.setup(sample_rate={mode})",
                         f"{t * unit:.0f} ms", f"{(t / base - 1) * 100:+.1f} %",
                         f"{t / base:.3f}x"])
    rows.append([f"(work per message: {loops} loops, calibrated to ~50 us)", "", "", ""])
    return rows


def table(title: str, rows: list[list[str]]) -> None:
    headers = ["case", "median", "added", "ratio"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def main() -> int:
    if "--pipeline-round" in sys.argv:
        index = sys.argv.index("--pipeline-round")
        mode, messages, loops = sys.argv[index + 1], int(sys.argv[index + 2]), int(
            sys.argv[index + 3])
        wall, cpu = pipeline_round(mode, messages, loops)
        print(json.dumps({"seconds": wall, "cpu": cpu}))
        return 0
    started = time.perf_counter()
    table("1. unsampled put+get on queue.Queue (goal: <= 0.25 us added)", bench_unsampled())
    table("2. one sampled message, both spans exported to the trace DB", bench_sampled())
    table("3. reference pipeline (goal: <= 2 % at sample rate 0.01)", bench_pipeline())
    print(f"\n({time.perf_counter() - started:.0f} s; medians of interleaved rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
