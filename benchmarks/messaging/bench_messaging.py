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
   a second queue), untraced against procscope.setup() at sample rates 0, 0.01 and 1.0
   (and at 0.01 with level messages_only). Goal: at most 2 % at 0.01. Each run is a fresh
   interpreter (setup is once per process); only the pipeline's steady state is timed:
   every process is started, and has sent and received sampled warm-up messages, before
   the clock starts (the first sampled messages of a process cost a few hundred
   microseconds more, once).

Every figure is reported as wall time and as CPU time (process_time, all threads; for
the pipeline, summed over its processes): this 2-core machine is shared, and the wall
time of a run swings by 10 % or more with the others' load while its CPU time moves much
less.

    python benchmarks/messaging/bench_messaging.py [--quick]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shutil
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

def paired(base: list[tuple[float, float]], other: list[tuple[float, float]]
           ) -> tuple[float, float, float, float]:
    """Medians of (wall, CPU) of ``other`` and of its per-round differences to ``base``.

    The difference is taken within each round (the two runs are side by side, so they see
    the same load) and its median reported: steadier than a difference of medians.
    """
    wall = median([o[0] for o in other])
    cpu = median([o[1] for o in other])
    d_wall = median([o[0] - b[0] for b, o in zip(base, other)])
    d_cpu = median([o[1] - b[1] for b, o in zip(base, other)])
    return wall, cpu, d_wall, d_cpu


def timed(function: Any, n: int, scale: float) -> tuple[float, float]:
    """(wall, CPU) per iteration of ``function()``, which runs ``n`` iterations."""
    wall_started = time.perf_counter()
    cpu_started = time.process_time()
    function()
    return ((time.perf_counter() - wall_started) / n * scale,
            (time.process_time() - cpu_started) / n * scale)


def bench_unsampled() -> list[list[str]]:
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider

    from procscope.core import shared_state
    from procscope.instrumentation.messaging import MessagingInstrumentor

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
    n = 10_000
    rounds = 21 if QUICK else 81
    unsampled_parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(0))
        )
    )

    def run(q: queue.Queue[int]) -> tuple[float, float]:
        put, get = q.put, q.get

        def loop() -> None:
            for i in range(n):
                put(i)
                get()

        return timed(loop, n, 1e9)

    def run_in_parent(q: queue.Queue[int]) -> tuple[float, float]:
        token = context.attach(unsampled_parent)
        try:
            return run(q)
        finally:
            context.detach(token)

    bare: list[tuple[float, float]] = []
    rate0: list[tuple[float, float]] = []
    in_parent: list[tuple[float, float]] = []
    bare_parent: list[tuple[float, float]] = []
    for _ in range(rounds):
        bare.append(run(plain_q))
        bare_parent.append(run_in_parent(plain_q))
        instrumentor.instrument(tracer_provider=provider)
        rate0.append(run(traced_q))
        in_parent.append(run_in_parent(traced_q))
        instrumentor.uninstrument()
    rows = []
    for label, base, ours in (("rate 0, no span", bare, rate0),
                              ("in a non-sampled span", bare_parent, in_parent)):
        b_wall, b_cpu, _, _ = paired(base, base)
        wall, cpu, d_wall, d_cpu = paired(base, ours)
        rows.append([f"put+get, uninstrumented ({label})", f"{b_wall:.0f} ns",
                     f"{b_cpu:.0f} ns", "", ""])
        rows.append([f"put+get, unsampled ({label})", f"{wall:.0f} ns", f"{cpu:.0f} ns",
                     f"+{d_wall:.0f} ns", f"+{d_cpu:.0f} ns"])
    return rows


# --- 2. one sampled message ------------------------------------------------------------------

def bench_sampled() -> list[list[str]]:
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Link, SpanKind

    from procscope.core import shared_state
    from procscope.exporters.tracedb import TraceDBSpanExporter
    from procscope.instrumentation.messaging import MessagingInstrumentor

    shared_state.settings().sample_rate = 1.0
    shared_state.settings().capture_content = True
    from opentelemetry.sdk.resources import ProcessResourceDetector, Resource

    folder = tempfile.mkdtemp(prefix="bench-messaging-")
    # The resource procscope.setup() builds has the process detector's attributes
    # (process.pid among them), which the messaging spans then do not repeat.
    provider = TracerProvider(resource=Resource.create().merge(ProcessResourceDetector().detect()))
    processor = BatchSpanProcessor(TraceDBSpanExporter(os.path.join(folder, "trace.db")))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    instrumentor = MessagingInstrumentor()
    plain_q: queue.Queue[Any] = queue.Queue()
    instrumentor.instrument(tracer_provider=provider)
    traced_q: queue.Queue[Any] = queue.Queue()
    instrumentor.uninstrument()
    n = 1_000
    rounds = 5 if QUICK else 11
    message = {"job": 17, "payload": "x" * 40}
    # What our two spans carry (docs/semantic-conventions.md), as constants: the SDK's
    # cost of recording and exporting them, without anything of ours.
    send_attributes: dict[str, Any] = {
        "messaging.system": "python_queue", "messaging.operation.type": "send",
        "messaging.operation.name": "put", "messaging.destination.name": "q@bench.py:1",
        "procscope.messaging.queue.type": "Queue", "thread.id": 1, "thread.name": "MainThread",
        "procscope.messaging.content": repr(message),
        "messaging.message.id": "0123456789abcdef",
    }
    receive_attributes: dict[str, Any] = {
        "messaging.system": "python_queue", "messaging.operation.type": "receive",
        "messaging.operation.name": "get", "messaging.destination.name": "q@bench.py:1",
        "messaging.message.id": "0123456789abcdef", "thread.id": 1,
        "thread.name": "MainThread", "procscope.messaging.sender.pid": 1,
        "procscope.messaging.sender.thread.id": 1,
        "procscope.messaging.sender.thread.name": "MainThread",
        "procscope.messaging.wait_time": 1e-6, "procscope.messaging.block_time": 0.0,
    }

    def traced() -> None:
        for _ in range(n):
            traced_q.put(message)
            traced_q.get()
        processor.force_flush()

    def two_spans() -> None:
        for _ in range(n):
            plain_q.put(message)
            plain_q.get()
            tracer.start_span("send").end()
            tracer.start_span("receive").end()
        processor.force_flush()

    def two_spans_alike() -> None:
        for _ in range(n):
            plain_q.put(message)
            plain_q.get()
            send = tracer.start_span("put q", kind=SpanKind.PRODUCER,
                                     attributes=dict(send_attributes))
            send.end()
            parent = send.get_span_context()
            tracer.start_span(
                "get q", context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
                kind=SpanKind.CONSUMER, attributes=dict(receive_attributes),
                links=[Link(parent)],
            ).end()
        processor.force_flush()

    def bare() -> None:
        for _ in range(n):
            plain_q.put(message)
            plain_q.get()

    ours: list[tuple[float, float]] = []
    sdk: list[tuple[float, float]] = []
    alike: list[tuple[float, float]] = []
    plain: list[tuple[float, float]] = []
    for _ in range(rounds):
        plain.append(timed(bare, n, 1e6))
        sdk.append(timed(two_spans, n, 1e6))
        alike.append(timed(two_spans_alike, n, 1e6))
        instrumentor.instrument(tracer_provider=provider)
        ours.append(timed(traced, n, 1e6))
        instrumentor.uninstrument()
        context.attach(context.Context())  # the consumer context of the last get, gone
    processor.shutdown()
    p_wall, p_cpu, _, _ = paired(plain, plain)
    s_wall, s_cpu, s_dwall, s_dcpu = paired(plain, sdk)
    a_wall, a_cpu, a_dwall, a_dcpu = paired(plain, alike)
    o_wall, o_cpu, o_dwall, o_dcpu = paired(plain, ours)
    return [
        ["put+get, uninstrumented", f"{p_wall:.1f} us", f"{p_cpu:.1f} us", "", "", ""],
        ["put+get + two bare SDK spans (batch, trace DB)", f"{s_wall:.1f} us",
         f"{s_cpu:.1f} us", f"+{s_dwall:.1f} us", f"+{s_dcpu:.1f} us", "reference"],
        ["put+get + two SDK spans with our attributes and link", f"{a_wall:.1f} us",
         f"{a_cpu:.1f} us", f"+{a_dwall:.1f} us", f"+{a_dcpu:.1f} us",
         f"{a_dcpu / s_dcpu:.2f}x"],
        ["put+get sampled: both spans (batch, trace DB)", f"{o_wall:.1f} us",
         f"{o_cpu:.1f} us", f"+{o_dwall:.1f} us", f"+{o_dcpu:.1f} us",
         f"{o_dcpu / s_dcpu:.2f}x ({o_dcpu / a_dcpu:.2f}x alike)"],
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


def flush() -> None:
    """Export the spans this process has made so far (nothing when not set up)."""
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush()


def consumer(jobs: Any, results: Any, loops: int) -> None:
    cpu_started = None
    while True:
        item = jobs.get()
        if item is None:
            # This process's CPU time over the run, all its threads, with the export of
            # the spans it made (flushed now: the batch processor would otherwise export
            # them after the run, at exit, where no clock sees them).
            flush()
            results.put(("cpu", time.process_time() - (cpu_started or 0.0)))
            return
        if cpu_started is None and item >= 0:
            flush()  # (the warm-up messages' spans: before the clock)
            cpu_started = time.process_time()
        results.put((item, busy(loops)))


WARM_UP = 10  # sampled messages each of the producer process and the main process send


def producer(jobs: Any, start: int, count: int, go: Any = None, results: Any = None,
             rate: float | None = None) -> None:
    if rate is not None:
        # The producer process (forked after the main process's warm-up) warms its own
        # sampled path the same way before the clock, then runs at the run's rate.
        from opentelemetry import context

        import procscope

        procscope.configure(sample_rate=1.0)
        for warm in range(WARM_UP):
            jobs.put(-100 - warm)
        procscope.configure(sample_rate=rate)
        context.attach(context.Context())
    elif results is not None:
        for warm in range(WARM_UP):
            jobs.put(-100 - warm)  # the same messages, untraced
    if go is not None:
        if results is not None:
            flush()  # (the warm-up messages' spans: before the clock)
        go.wait()
    cpu_started = time.process_time()
    for i in range(start, start + count):
        jobs.put(i)
    if results is not None:
        flush()
        results.put(("cpu", time.process_time() - cpu_started))


def pipeline_round(mode: str, messages: int, loops: int) -> tuple[float, float]:
    """One timed pipeline run in this (fresh) interpreter: (wall seconds, CPU seconds).

    The CPU time is that of every process of the pipeline over the run (the main process,
    the producer process and both consumers, each measured from its first message),
    which the machine's other load disturbs much less than the wall time.
    """
    level, _, rate = mode.rpartition(":")
    if mode != "off":
        import procscope

        folder = tempfile.mkdtemp(prefix="bench-pipeline-")
        procscope.setup(db=os.path.join(folder, "trace.db"), exporter="tracedb",
                        sample_rate=float(rate), level=level or None)
    ctx = mp.get_context("fork")
    jobs, results = ctx.Queue(), ctx.Queue()
    consumers = [ctx.Process(target=consumer, args=(jobs, results, loops)) for _ in range(2)]
    for process in consumers:
        process.start()
    half = messages // 2
    # Warm the consumers and the queues' feeder threads before the clock starts, with
    # every warm-up message sampled: the first sampled messages of a process cost a few
    # hundred microseconds more than the later ones (cold caches), once per process; this
    # measures the steady state. Only this process samples at 1.0 for the warm-up (the
    # consumers, already started, keep the rate of the run): the consumers' spans are
    # sampled because the warm-up messages carry a sampled context, and so are the
    # results they send while handling them.
    if mode != "off":
        procscope.configure(sample_rate=1.0)
    for warm in range(-1, -1 - 2 * WARM_UP, -1):
        jobs.put(warm)
    for _ in range(2 * WARM_UP):
        results.get()
    if mode != "off":
        from opentelemetry import context

        procscope.configure(sample_rate=float(rate))
        # The last warm-up result left its (sampled) context attached to this thread:
        # drop it, or the producer thread and process started below would inherit it
        # and every message they send would be sampled.
        context.attach(context.Context())
    # Every process is started before the clock (process start-up is not messaging).
    go = ctx.Event()
    feeder = ctx.Process(target=producer, args=(
        jobs, 0, half, go, results, None if mode == "off" else float(rate)))
    feeder.start()
    for _ in range(WARM_UP):
        results.get()  # the producer process's warm-up messages, back from the consumers
    if mode != "off":
        context.attach(context.Context())  # (the last one's context, as above)
    thread = threading.Thread(target=producer, args=(jobs, half, messages - half, go))
    thread.start()
    time.sleep(0.2)  # the producer process is up and waiting
    flush()  # (the warm-up messages' spans: before the clock)
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
    thread.join()
    flush()  # (the spans of this process, the producer thread's included: see consumer())
    cpu += time.process_time() - cpu_started
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
        shutil.rmtree(folder, ignore_errors=True)  # (run by the hundred: bench_flight.py)
    return elapsed, cpu


def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (the spread of the middle half of the rounds)."""
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def bench_pipeline() -> list[list[str]]:
    messages = 2_000 if QUICK else 6_000
    rounds = 3 if QUICK else 13
    loops = calibrate()
    # sample_rate 0.0: procscope set up, every wrapper in place, nothing sampled; the
    # difference to 0.01 is what the sampled 1 % of the messages cost. The default level
    # ("full") also runs the lifecycle and state instrumentors; level messages_only
    # (lifecycle and messaging) shows the messaging instrumentor's part. "off (again)" is
    # a second uninstrumented run in each round: its ratio to the first is this machine's
    # noise, the floor under which no difference means anything. Rate 1.0 (slow) runs in
    # every third round only.
    modes = ["off", "off-again", "0.0", "0.01", "messages_only:0.01", "1.0"]
    walls: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, dict[str, list[float]]] = {"wall": {m: [] for m in modes},
                                                 "CPU": {m: [] for m in modes}}
    for index in range(rounds):
        # Rotate the order within the round too: a mode always run first (or right after
        # a heavy one) would meet the machine in another state than the others.
        shift = index % (len(modes) - 1)
        order = modes[:-1][shift:] + modes[:-1][:shift] + (["1.0"] if index % 3 == 0 else [])
        got: dict[str, tuple[float, float]] = {}
        for mode in order:
            out = subprocess.run(
                [sys.executable, __file__, "--pipeline-round", mode.replace("-again", ""),
                 str(messages), str(loops)],
                capture_output=True, text=True, check=True, timeout=300,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            got[mode] = (result["seconds"], result["cpu"])
            walls[mode].append(result["seconds"])
            cpus[mode].append(result["cpu"])
        for mode, (wall, cpu) in got.items():
            # Each run against the uninstrumented run of the same round (side by side).
            ratios["wall"][mode].append(wall / got["off"][0])
            ratios["CPU"][mode].append(cpu / got["off"][1])
    rows = []
    for label, data in (("CPU", cpus), ("wall", walls)):
        rows.append([f"pipeline {label} time, {messages} messages, uninstrumented",
                     f"{median(data['off']) * 1e3:.0f} ms", "", "", ""])
        for mode in modes[1:]:
            level, _, rate = mode.rpartition(":")
            if mode == "off-again":
                name = "uninstrumented again (noise)"
            else:
                name = f"procscope.setup(sample_rate={rate}" + (
                    f", level={level})" if level else ")")
            per_round = ratios[label][mode]
            low, high = quartiles(per_round)
            ratio = median(per_round)
            rows.append([f"pipeline {label} time, {name}", f"{median(data[mode]) * 1e3:.0f} ms",
                         f"{(ratio - 1) * 100:+.1f} %",
                         f"{(low - 1) * 100:+.1f} .. {(high - 1) * 100:+.1f} %",
                         f"{len(per_round)}"])
    rows.append([f"(work per message: {loops} loops, calibrated to ~50 us; CPU: all processes,"
                 " span export included)", "", "", "", ""])
    return rows


def table(title: str, rows: list[list[str]], headers: list[str] | None = None) -> None:
    if headers is None:
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
    table("1. unsampled put+get on queue.Queue (goal: <= 0.25 us added)", bench_unsampled(),
          ["case", "wall", "CPU", "added wall", "added CPU"])
    table("2. one sampled message, both spans exported to the trace DB (CPU: all threads,"
          " the export too)", bench_sampled(),
          ["case", "wall", "CPU", "added wall", "added CPU", "added CPU ratio"])
    table("3. reference pipeline (goal: <= 2 % at sample rate 0.01); added: median of the"
          " per-round ratios, spread: their middle half", bench_pipeline(),
          ["case", "median", "added", "spread (quartiles)", "rounds"])
    print(f"\n({time.perf_counter() - started:.0f} s; medians of interleaved rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
