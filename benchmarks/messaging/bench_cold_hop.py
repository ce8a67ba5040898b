"""A sampled multiprocessing.Queue hop as it happens at a low sample rate: one hop in a
hundred, between stretches of other work. procscope's hop (its producer and consumer
spans) against the same hop wrapped in two plain SDK spans (a producer span with the
three required messaging attributes, a consumer span with a link to it), and against the
bare hop; the same procscope.setup() pipeline (trace DB exporter) for both traced ones.

Each variant runs in a fresh interpreter; the variants are interleaved round by round and
the medians reported. The hop is timed as process CPU (the queue's feeder thread pickles
on another thread); the export of its spans is flushed at the end and reported per hop.

This is the floor under the reference pipeline's goal (issue 4, 2 % at sample rate 0.01):
what one sampled hop costs when it runs this rarely, with plain SDK spans.

    python benchmarks/messaging/bench_cold_hop.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# The same ~50 us stretch of work as the reference pipeline (this folder is sys.path[0]).
from bench_messaging import busy, calibrate

QUICK = "--quick" in sys.argv
VARIANTS = ("bare hop", "two SDK spans", "procscope")
EVERY = 100  # one sampled hop per this many stretches of work
HOPS = 20 if QUICK else 40
WARM_UP_HOPS = 5


def run_variant(variant: str, loops: int) -> dict[str, float]:
    """In this fresh interpreter: the median CPU of a hop, and the export CPU per hop."""
    import multiprocessing as mp

    if variant == "two SDK spans":
        # Only the pipeline, no instrumentor: the spans are the ones made below.
        os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = (
            "procscope_messaging,procscope_lifecycle,procscope_state"
        )
    if variant != "bare hop":
        import procscope

        procscope.setup(
            db=os.path.join(tempfile.mkdtemp(prefix="bench-cold-hop-"), "trace.db"),
            exporter="tracedb",
            sample_rate=1.0,
            level="messages_only",
        )
    from opentelemetry import context, trace

    tracer = trace.get_tracer("bench.cold_hop")
    jobs = mp.get_context("fork").Queue()
    jobs.put(-1)
    jobs.get()

    def hop(item: int) -> None:
        if variant == "two SDK spans":
            with tracer.start_as_current_span(
                "send jobs",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "python.multiprocessing",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": "jobs",
                },
            ) as sent:
                jobs.put(item)
            link = trace.Link(sent.get_span_context())
            got = jobs.get()
            with tracer.start_as_current_span(
                "receive jobs", kind=trace.SpanKind.CONSUMER, links=[link]
            ):
                assert got == item
        else:
            jobs.put(item)
            assert jobs.get() == item
        # Each hop is a trace of its own, as at a low rate: nothing stays attached.
        context.attach(context.Context())

    def flush() -> float:
        started = time.process_time()
        if variant != "bare hop":
            trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        return time.process_time() - started

    costs: list[float] = []
    for index in range((WARM_UP_HOPS + HOPS) * EVERY):
        if index == WARM_UP_HOPS * EVERY:
            flush()  # the warm-up hops' spans, and creating the trace DB: before the clock
        busy(loops)
        if index % EVERY == EVERY // 2:
            started = time.process_time()
            hop(index)
            costs.append(time.process_time() - started)
    export = flush() / HOPS
    if variant != "bare hop":
        procscope.shutdown()
    return {"hop": statistics.median(costs[WARM_UP_HOPS:]), "export": export}


def main() -> int:
    if "--variant" in sys.argv:
        variant = sys.argv[sys.argv.index("--variant") + 1]
        loops = int(sys.argv[sys.argv.index("--loops") + 1])
        print(json.dumps(run_variant(variant, loops)))
        return 0
    loops = calibrate()
    rounds = 3 if QUICK else 7
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    started = time.perf_counter()
    for index in range(rounds):
        shift = index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--loops", str(loops)],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"a sampled multiprocessing.Queue hop, one in {EVERY} stretches of ~50 us of work; "
        f"{rounds} interleaved rounds of {HOPS} hops, medians; process CPU"
    )
    hop = {v: statistics.median(r["hop"] for r in results[v]) for v in VARIANTS}
    export = {v: statistics.median(r["export"] for r in results[v]) for v in VARIANTS}
    base = hop["bare hop"]
    sdk_added = hop["two SDK spans"] - base
    print(f"{'variant':16} {'hop':>9} {'added':>9} {'vs SDK':>7} {'export/hop':>11}")
    for variant in VARIANTS:
        added = hop[variant] - base
        ratio = f"{added / sdk_added:.2f}x" if variant != "bare hop" and sdk_added > 0 else ""
        spent = f"{export[variant] * 1e6:.1f} us" if variant != "bare hop" else ""
        print(
            f"{variant:16} {hop[variant] * 1e6:7.1f} us {added * 1e6:+7.1f} us "
            f"{ratio:>7} {spent:>11}"
        )
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
