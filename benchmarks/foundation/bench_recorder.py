"""The recorder against SDK spans: what a recorded event costs, on the calling thread and
in all (issue 12).

    python benchmarks/foundation/bench_recorder.py [--rounds 7] [--messages 20000]

Each workload runs in a fresh interpreter per round, rounds interleaved, medians:

* ``plain``: no instrumentation;
* ``sdk``: procscope's instrumentors making SDK spans on the calling thread, into a
  BatchSpanProcessor whose exporter drops everything (the path before the recorder);
* ``records``: the same instrumentors appending records, made into spans by the
  recorder's drain thread, into the same processor and exporter.

Workloads: put+get of one message on a ``queue.Queue`` (a send and a receive record), a
thread start+join (a thread span), a traced object's change outside any span (a state
span with its change event). Reported per operation: wall time on the calling thread
with the drain running beside it, and CPU time of the whole process (every thread)
including a final flush, so that work moved off the calling thread is still counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROGRAM = r"""
import json, os, queue, sys, threading, time
mode, workload, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
provider = None
if mode != "plain":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from procscope.core.recorder import RecordingSpanProcessor
    import procscope
    from procscope.instrumentation.messaging import MessagingInstrumentor
    from procscope.instrumentation.lifecycle import LifecycleInstrumentor
    from procscope.instrumentation.state import StateInstrumentor

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    batch = BatchSpanProcessor(Drop(), max_queue_size=1 << 20, max_export_batch_size=2048)
    provider.add_span_processor(batch if mode == "sdk" else RecordingSpanProcessor([batch]))
    for cls in (MessagingInstrumentor, LifecycleInstrumentor, StateInstrumentor):
        cls().instrument(tracer_provider=provider, spans="all")

class Counter:
    def __init__(self):
        self.value = 0
    def bump(self):
        self.value += 1

if mode != "plain" and workload == "state":
    Counter = procscope.trace_state(Counter)

q = queue.Queue()
counter = Counter()
def op_message():
    q.put(1)
    q.get()
def op_thread():
    t = threading.Thread(target=int)
    t.start()
    t.join()
def op_state():
    counter.bump()
op = {"message": op_message, "thread": op_thread, "state": op_state}[workload]
for _ in range(min(n, 500)):
    op()  # warm-up
if provider is not None:
    provider.force_flush()
cpu0 = time.process_time()
t0 = time.perf_counter()
for _ in range(n):
    op()
wall = time.perf_counter() - t0
if provider is not None:
    provider.force_flush()
cpu = time.process_time() - cpu0
print(json.dumps({"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}))
"""

MODES = ("plain", "sdk", "records")
WORKLOADS = {"message": 1.0, "thread": 0.1, "state": 1.0}  # share of --messages per workload


def one(mode: str, workload: str, n: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, workload, str(n)],
        capture_output=True, text=True, env=env, timeout=600, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for workload, share in WORKLOADS.items():
            for mode in MODES:
                n = max(100, int(args.messages * share))
                results.setdefault((workload, mode), []).append(one(mode, workload, n))
    print(f"recorder vs SDK spans: medians of {args.rounds} interleaved rounds (us per op)")
    print(f"{'workload':10s} {'mode':8s} {'wall':>8s} {'added':>8s} {'cpu':>8s} {'added':>8s}")
    for workload in WORKLOADS:
        base = {k: statistics.median(r[k] for r in results[(workload, "plain")])
                for k in ("wall_us", "cpu_us")}
        for mode in MODES:
            wall = statistics.median(r["wall_us"] for r in results[(workload, mode)])
            cpu = statistics.median(r["cpu_us"] for r in results[(workload, mode)])
            print(f"{workload:10s} {mode:8s} {wall:8.2f} {wall - base['wall_us']:+8.2f} "
                  f"{cpu:8.2f} {cpu - base['cpu_us']:+8.2f}")


if __name__ == "__main__":
    main()
