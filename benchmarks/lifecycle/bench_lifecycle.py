"""Lifecycle instrumentor overhead: thread start+join, asyncio task create+await, and
Process start+join for each start method; uninstrumented against instrumented, measured
side by side in the same run (rounds interleaved, medians reported).

    python benchmarks/lifecycle/bench_lifecycle.py [--quick]

The pipeline is procscope's own (procscope.setup with the trace DB exporter, in a
temporary folder), so the instrumented figures include span creation, the batch
processor's queue and, for processes, the child setting procscope up and flushing at exit.
"span each" = a span for every thread and task (spans="all");
Each timing includes flushing the spans that the round made (exporting them is part of
their cost). "errors only" = context propagation and spans only for failures (spans="errors", the
default); "no export" = the same with a tracer provider that has no span processor (the
instrumentation's own cost). Processes: "span each" = process spans (always made at full);
"unsampled" = procscope's pipeline at sample rate 0 (no span; context and flushes only).
Goal (issue 5): at most 5% added to thread and process start+join.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable


def noop() -> None:
    pass


def thread_start_join(n: int) -> None:
    for _ in range(n):
        thread = threading.Thread(target=noop)
        thread.start()
        thread.join()


async def _nothing() -> None:
    return None


def task_create_await(n: int) -> None:
    async def main() -> None:
        for _ in range(n):
            await asyncio.get_running_loop().create_task(_nothing())

    asyncio.run(main())


def process_start_join(method: str) -> Callable[[int], None]:
    ctx = mp.get_context(method)

    def run(n: int) -> None:
        for _ in range(n):
            process = ctx.Process(target=noop)
            process.start()
            process.join()

    return run


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    import procscope
    from procscope.instrumentation.lifecycle import LifecycleInstrumentor

    folder = tempfile.mkdtemp(prefix="procscope-bench-lifecycle-")
    # Only the lifecycle instrumentor: this measures it alone.
    os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "procscope_messaging,procscope_state"
    scope = procscope.setup(db=os.path.join(folder, "bench.db"), exporter="tracedb")
    provider = scope.tracer_provider
    # The instrumentation's own cost, without exporting: a provider with no processor.
    from opentelemetry.sdk.trace import TracerProvider

    bare = TracerProvider()
    instrumentor = LifecycleInstrumentor()

    def switch(mode: str) -> None:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        # "unsampled": head sampling at rate 0, as most traces are at a production rate.
        procscope.configure(sample_rate=0.0 if mode == "unsampled" else 1.0)
        if mode == "off":
            return
        if mode == "unsampled":
            instrumentor.instrument(tracer_provider=provider)
            return
        spans, _, export = mode.partition("/")
        instrumentor.instrument(tracer_provider=bare if export else provider, spans=spans)

    rounds = 3 if quick else 9
    # (name, function, operations per round, modes compared)
    every = ("off", "errors", "all", "errors/bare", "all/bare")
    cases: list[tuple[str, Callable[[int], None], int, tuple[str, ...]]] = [
        ("thread start+join", thread_start_join, 2000, every),
        ("asyncio task create+await", task_create_await, 5000, every),
        (
            "Process start+join (fork)",
            process_start_join("fork"),
            8,
            ("off", "all", "all/bare", "unsampled"),
        ),
        ("Process start+join (forkserver)", process_start_join("forkserver"), 5, ("off", "all")),
        ("Process start+join (spawn)", process_start_join("spawn"), 2, ("off", "all")),
    ]
    if quick:
        cases = [(n, f, max(1, ops // 4), m) for n, f, ops, m in cases]
    labels = {
        "off": "uninstrumented",
        "errors": "errors only",
        "all": "span each",
        "errors/bare": "errors, no export",
        "all/bare": "span each, no exp.",
        "unsampled": "unsampled (rate 0)",
    }
    print(f"lifecycle instrumentor: {rounds} interleaved rounds, median per operation")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    header = f"{'operation':34} {'mode':19} {'per op':>10} {'added':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    for name, func, ops, modes in cases:
        for mode in reversed(modes):  # warm-up (imports, the fork server, the DB)
            switch(mode)
            func(max(1, ops // 4))
        samples: dict[str, list[float]] = {m: [] for m in modes}
        for index in range(rounds):
            order = modes if index % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                switch(mode)
                provider.force_flush()
                started = time.perf_counter()
                func(ops)
                # Each mode pays for exporting its own spans, inside its own timing, and
                # none of that work spills into the next mode's round.
                provider.force_flush()
                samples[mode].append((time.perf_counter() - started) / ops)
        base = statistics.median(samples["off"])
        for mode in modes:
            value = statistics.median(samples[mode])
            added = "" if mode == "off" else f"{(value / base - 1) * 100:+.1f}%"
            results[(name, mode)] = value
            print(f"{name:34} {labels[mode]:19} {_fmt(value):>10} {added:>9}")
        print()
    # The thread wrappers alone (no thread started), errors mode: the instrumentation's
    # own cost per thread start+join, steady where the timings above are noisy.
    switch("errors")
    import timeit

    from procscope.instrumentation.lifecycle import _threads

    thread = threading.Thread(target=noop)
    start = _threads._make_start(lambda self: None)
    bootstrap = _threads._make_bootstrap_inner(lambda self: None)

    def wrappers() -> None:
        start(thread)
        bootstrap(thread)

    number = 20_000 if quick else 100_000
    cost = min(timeit.repeat(wrappers, number=number, repeat=5)) / number
    base = results[("thread start+join", "off")]  # the uninstrumented median above
    print(
        f"thread wrappers alone (errors mode): {_fmt(cost)} per thread, "
        f"{cost / base * 100:.1f}% of the uninstrumented thread start+join above"
    )
    switch("off")
    bare.shutdown()
    procscope.shutdown()
    return 0


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
