"""Instructions the flight recorder adds to unsampled work, counted by callgrind
(repeatable on a noisy machine, unlike time). Same tree, recorder off against on.

Not run by ``make bench`` (it needs valgrind and takes a minute or two):

    .venv/bin/python benchmarks/flight/instructions_flight.py [OPERATION...]

Each operation runs N times and 0 times in the same interpreter, with
``PROCSCOPE_FLIGHT_RECORDER`` off and on, all at ``sample_rate=0`` with
``exporter="none"``; the difference over N is its cost:

- ``put+get``: a ``queue.Queue`` put+get (two records with the recorder on);
- ``put+get, multiprocessing``: a ``multiprocessing.Queue`` put+get (two records);
- ``state change``: a traced object's attribute set in an unsampled trace (one record);
- ``thread start+join``: a ``threading.Thread`` (its end: one record);
- ``put+get in a child (mirrored)``: the ``put+get`` above in a fork child, where the
  recorder also copies its ring to disk every 100 ms (``_flight_mirror``): the
  instructions of both processes, the mirror's thread included. Minus the ``put+get``
  row, what the mirror adds a record.

The time column converts instructions with the rate of the uninstrumented put+get
(``plain``, procscope imported, not set up), measured by wall clock in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "foundation"))

from instructions_hot_paths import CALLGRIND  # noqa: E402

WORKLOAD = """
import multiprocessing, queue, sys, threading
mode, n = sys.argv[1], int(sys.argv[2])
import procscope
if mode != "plain":
    procscope.setup(sample_rate=0.0, exporter="none")
if mode in ("plain", "put+get"):
    q = queue.Queue(); put, get = q.put, q.get
    for i in range(n):
        put(i); get()
elif mode == "mp":
    q = multiprocessing.Queue(); put, get = q.put, q.get
    for i in range(n):
        put(i); get()
elif mode == "state":
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    class Counter:
        def __init__(self): self.value = 0
    counter = procscope.trace_state(Counter(), name="counter")
    unsampled = NonRecordingSpan(SpanContext(1, 1, False, TraceFlags(0)))
    with trace.use_span(unsampled):
        for i in range(n):
            counter.value = i
elif mode == "thread":
    for i in range(n):
        t = threading.Thread(target=int); t.start(); t.join()
elif mode == "child":
    import time
    def work(n):
        q = queue.Queue(); put, get = q.put, q.get
        for i in range(n):
            put(i); get()
        time.sleep(0.35)  # (the mirror's last ticks copy what is left)
    child = multiprocessing.get_context("fork").Process(target=work, args=(n,))
    child.start(); child.join()
if mode != "plain":
    procscope.shutdown()
"""

OPERATIONS = [
    ("put+get", "put+get", 20000, 2),
    ("put+get, multiprocessing", "mp", 5000, 2),
    ("state change, unsampled trace", "state", 5000, 1),
    ("thread start+join", "thread", 1000, 1),
    ("put+get in a child (mirrored)", "child", 5000, 2),
]


def instructions(script: str, mode: str, n: int, flight: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PROCSCOPE_FLIGHT_RECORDER"] = flight
    done = subprocess.run([*CALLGRIND, sys.executable, script, mode, str(n)],
                          capture_output=True, text=True, env=env, check=True)
    # Every process's count (a fork child prints its own): their sum.
    counts = [int(line.split(":")[-1].strip()) for line in done.stderr.splitlines()
              if "Collected" in line]
    if not counts:
        raise SystemExit(f"no instruction count from callgrind:\n{done.stderr}")
    return sum(counts)


def per_op(script: str, mode: str, n: int, flight: str) -> float:
    return (instructions(script, mode, n, flight) - instructions(script, mode, 0, flight)) / n


def plain_rate(script: str) -> float:
    """Instructions per microsecond of the plain put+get on this machine (wall clock)."""
    n = 200_000
    best = None
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, script, "plain", str(n)], check=True)
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
    started = time.perf_counter()
    subprocess.run([sys.executable, script, "plain", "0"], check=True)
    empty = time.perf_counter() - started
    per = max(1e-9, (best - empty) / n) * 1e6
    return per_op(script, "plain", 20000, "off") / per


def main() -> int:
    wanted = sys.argv[1:]  # labels to run (all when none), e.g. "put+get"
    # A file of its own (two runs side by side must not share one); beside the project,
    # so that the workload imports the same tree.
    fd, script = tempfile.mkstemp(prefix=".instructions_workload_", suffix=".py", dir=HERE)
    with os.fdopen(fd, "w") as file:
        file.write(WORKLOAD)
    try:
        rate = plain_rate(script)
        print(f"(plain put+get: {rate:,.0f} instructions per us on this machine)")
        print(f"{'operation':<32}{'off':>10}{'on':>10}{'added':>10}{'per record':>12}{'~us':>8}")
        for label, mode, n, records in OPERATIONS:
            if wanted and label not in wanted:
                continue
            off = per_op(script, mode, n, "off")
            on = per_op(script, mode, n, "on")
            added = (on - off) / records
            print(f"{label:<32}{off:>10,.0f}{on:>10,.0f}{on - off:>+10,.0f}{added:>12,.0f}"
                  f"{added / rate:>8.3f}")
    finally:
        os.unlink(script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
