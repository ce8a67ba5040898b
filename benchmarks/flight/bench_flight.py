"""The flight recorder (issue 13): what it adds to unsampled work, what a record weighs,
how long a dump takes to reach the trace DB, and the reference pipeline at 0.01.

    python benchmarks/flight/bench_flight.py [--quick] [--only put_get,memory,dump,pipeline,killed]
        [--pipeline-rounds N]

1. Unsampled put+get on ``queue.Queue`` at ``sample_rate=0`` with the recorder off
   (``PROCSCOPE_FLIGHT_RECORDER=off``) and on (the default below 1): each round runs both
   in fresh interpreters, side by side; the added time per event (a put or a get) is the
   median of the per-round differences, halved. Goal: at most 0.3 us per event.
2. Memory per record: ``tracemalloc``'s count of what 100,000 put/get records hold in the
   ring (the tuples and their ints; the queue and the call site are shared). Goal: at
   most 200 B.
3. A dump of 100,000 records (50,000 unsampled put+get) into a fresh trace DB: the time
   ``procscope.dump`` holds the triggering thread (the take of the ring), the time until
   a reader sees the records in the DB (the staged row: a dump this large is stored as
   one row first, then made into spans), the time until the dump's helper thread is
   done (with the trace DB alone, it writes the spans itself) and until they are in the
   DB (``force_flush``), and how many spans the DB then holds (a dump's spans lost on the
   way would show here). Goal: at most 0.5 s.
5. A fork child SIGKILLed while it makes about 2,000 or 40,000 put+get a second (rate
   0.01, the recorder on): how long before the kill the newest record the parent
   recovered from the child's mirror was made. Goal: at most 200 ms.
4. The messaging benchmark's reference pipeline (``bench_messaging.py``'s pipeline round:
   producer thread and process, two consumer processes, ~50 us of work per message) at
   ``sample_rate=0.01`` with the recorder off and on, CPU time of all processes, rounds
   interleaved (9, or ``--pipeline-rounds``); the quartiles of the per-round ratios show
   the machine's noise beside the median. Goal: at most +2 %.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

QUICK = "--quick" in sys.argv
HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGING = os.path.join(os.path.dirname(HERE), "messaging", "bench_messaging.py")

PUT_GET = r"""
import json, queue, sys, time
import procscope
procscope.setup(sample_rate=0.0, exporter="none")
n = int(sys.argv[1])
q = queue.Queue(); put, get = q.put, q.get
for i in range(2000):
    put(i); get()
best = None
for _ in range(5):
    started = time.perf_counter()
    for i in range(n):
        put(i); get()
    took = (time.perf_counter() - started) / n
    best = took if best is None else min(best, took)
print(json.dumps({"seconds": best}))
procscope.shutdown()
"""

MEMORY = r"""
import json, queue, tracemalloc
import procscope
from procscope.core import flight
procscope.setup(sample_rate=0.0, exporter="none", flight_memory="1GiB")
q = queue.Queue(); put, get = q.put, q.get
for i in range(1000):  # (the queue's own structures, profiles and caches: made now)
    put(i); get()
flight.take()
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
for i in range(50_000):
    put(i); get()
after = tracemalloc.get_traced_memory()[0]
records = len(flight._ring.records)
print(json.dumps({"bytes": (after - before) / records, "records": records}))
"""

DUMP = r"""
import json, os, queue, sys, time
import procscope
from procscope.core import _flight_spans, flight
db = os.path.join(sys.argv[1], "dump.db")
scope = procscope.setup(sample_rate=0.0, db=db, flight_memory="1GiB")
q = procscope.name(queue.Queue(), "jobs"); put, get = q.put, q.get
for i in range(50_000):
    put(i); get()
count = len(flight._ring.records)
started = time.perf_counter()
flight.dump("bench")
on_thread = time.perf_counter() - started
# When the records are in the DB, as a reader sees them: the staged row (a dump this
# large is stored as one row first, then made into spans: _flight_stage).
import sqlite3
reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
staged = None
while staged is None and _flight_spans.dump_running():
    if reader.execute("SELECT count(*) FROM flight_staged").fetchone()[0]:
        staged = time.perf_counter() - started
    else:
        time.sleep(0.001)
reader.close()
_flight_spans.wait_for_dumps(600)
made = time.perf_counter() - started
scope.force_flush(600_000)
stored = time.perf_counter() - started
procscope.shutdown()
import sqlite3
spans = sqlite3.connect(db).execute("SELECT count(*) FROM spans").fetchone()[0]
print(json.dumps({"records": count, "on_thread": on_thread, "made": made, "stored": stored,
                  "spans": spans, "staged": staged}))
"""


KILLED = r"""
import json, multiprocessing as mp, os, queue, signal, sqlite3, sys, time
import procscope

def work(done, rate):
    # About ``rate`` put+get a second (two records each), in slices of 1 ms.
    q = procscope.name(queue.Queue(), "inbox")
    i, per_ms = 0, max(1, rate // 1000)
    while True:
        deadline = time.perf_counter() + 0.001
        for _ in range(per_ms):
            q.put(i); q.get(); i += 1
        done.value = i
        while time.perf_counter() < deadline:
            pass

if __name__ == "__main__":
    db = os.path.join(sys.argv[1], "killed.db")
    procscope.setup(sample_rate=0.01, db=db)
    ctx = mp.get_context("fork")
    done = ctx.Value("q", 0, lock=False)
    worker = ctx.Process(target=work, args=(done, int(sys.argv[2])), name="worker")
    worker.start()
    while done.value < 5_000:
        time.sleep(0.01)
    time.sleep(float(sys.argv[3]))
    killed_ns = time.time_ns()
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    procscope.shutdown()
    newest, count = sqlite3.connect(db).execute(
        "SELECT max(start_ns), count(*) FROM spans WHERE pid = ? AND kind = 4",  # CONSUMER
        (worker.pid,)).fetchone()
    print(json.dumps({"behind": (killed_ns - newest) / 1e9, "received": count}))
"""


def run(source: str, *args: str, **env: str) -> dict[str, float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", source, *args], capture_output=True,
                          text=True, check=True, env=environ, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_put_get() -> list[list[str]]:
    n = 50_000 if QUICK else 200_000
    rounds = 3 if QUICK else 9
    off, on, added = [], [], []
    for index in range(rounds):
        order = ("off", "on") if index % 2 == 0 else ("on", "off")
        got = {mode: run(PUT_GET, str(n), PROCSCOPE_FLIGHT_RECORDER=mode)["seconds"]
               for mode in order}
        off.append(got["off"])
        on.append(got["on"])
        added.append((got["on"] - got["off"]) / 2)
    return [
        ["unsampled put+get, recorder off", f"{statistics.median(off) * 1e6:.3f} us", ""],
        ["unsampled put+get, recorder on", f"{statistics.median(on) * 1e6:.3f} us", ""],
        ["added per unsampled event (a put or a get)", f"{statistics.median(added) * 1e6:.3f} us",
         f"{rounds} rounds, medians of per-round differences"],
    ]


def bench_memory() -> list[list[str]]:
    got = run(MEMORY)
    return [["memory per record in the ring", f"{got['bytes']:.0f} B",
             f"{got['records']:.0f} records, tracemalloc"]]


def bench_dump() -> list[list[str]]:
    times = []
    for _ in range(1 if QUICK else 3):
        with tempfile.TemporaryDirectory() as folder:
            times.append(run(DUMP, folder))
    on_thread = statistics.median(t["on_thread"] for t in times)
    made = statistics.median(t["made"] for t in times)
    stored = statistics.median(t["stored"] for t in times)
    staged = statistics.median(t["staged"] or t["stored"] for t in times)
    records = times[0]["records"]
    spans = min(t["spans"] for t in times)
    return [
        [f"dump of {records:,.0f} records: on the triggering thread", f"{on_thread * 1e3:.0f} ms",
         "the take of the ring; the rest runs on the dump's helper thread"],
        [f"dump of {records:,.0f} records: in the trace DB (staged)", f"{staged:.2f} s",
         "the records stored as one row: a death after this loses none of them"],
        [f"dump of {records:,.0f} records: helper thread done", f"{made:.2f} s", ""],
        [f"dump of {records:,.0f} records: in the trace DB", f"{stored:.2f} s",
         f"as spans: {spans / stored:,.0f} spans/s; median of {len(times)}; {spans:,.0f} "
         "spans stored (fewest of the runs)"],
    ]


def bench_pipeline() -> list[list[str]]:
    messages = 2_000 if QUICK else 6_000
    rounds = 3 if QUICK else 9
    if "--pipeline-rounds" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--pipeline-rounds") + 1])
    loops = int(subprocess.run([sys.executable, "-c", (
        f"import sys; sys.argv=['x']; sys.path.insert(0, {os.path.dirname(MESSAGING)!r}); "
        "import bench_messaging as b; print(b.calibrate())")],
        capture_output=True, text=True, check=True).stdout.split()[-1])
    ratios, cpus = [], {"off": [], "on": []}
    for index in range(rounds):
        order = ("off", "on") if index % 2 == 0 else ("on", "off")
        got = {}
        for mode in order:
            environ = {k: v for k, v in os.environ.items()
                       if not k.startswith(("PROCSCOPE_", "OTEL_"))}
            environ["PROCSCOPE_FLIGHT_RECORDER"] = mode
            out = subprocess.run(
                [sys.executable, MESSAGING, "--pipeline-round", "0.01", str(messages),
                 str(loops)], capture_output=True, text=True, check=True, timeout=600,
                env=environ)
            got[mode] = json.loads(out.stdout.strip().splitlines()[-1])["cpu"]
            cpus[mode].append(got[mode])
        ratios.append(got["on"] / got["off"])
    return [
        [f"pipeline CPU at 0.01, {messages} messages, recorder off",
         f"{statistics.median(cpus['off']) * 1e3:.0f} ms", ""],
        [f"pipeline CPU at 0.01, {messages} messages, recorder on",
         f"{statistics.median(cpus['on']) * 1e3:.0f} ms",
         f"{(statistics.median(ratios) - 1) * 100:+.1f} % (median of {rounds} rounds)"],
        ["pipeline CPU on/off, per round: quartiles", "",
         " / ".join(f"{(q - 1) * 100:+.1f} %" for q in _quartiles(ratios))],
    ]


def _quartiles(values: list[float]) -> list[float]:
    """The lower quartile, median and upper quartile of ``values`` (the spread of the
    per-round ratios says how far the median can be trusted)."""
    if len(values) < 2:
        return [values[0]] * 3
    return statistics.quantiles(values, n=4)


def bench_killed() -> list[list[str]]:
    rows = []
    for rate in (2_000, 40_000):
        behind, received = [], []
        for index in range(2 if QUICK else 7):
            with tempfile.TemporaryDirectory() as folder:
                # (killed 0.5 to 1.1 s into the run: at any point of the mirror's tick)
                got = run(KILLED, folder, str(rate), f"{0.5 + 0.1 * index:.1f}")
            behind.append(got["behind"])
            received.append(got["received"])
        rows.append([f"SIGKILLed child, {rate:,} put+get/s: newest record recovered",
                     f"{statistics.median(behind) * 1e3:.0f} ms behind",
                     f"median of {len(behind)}, worst {max(behind) * 1e3:.0f} ms; "
                     f"{min(received):,} receives recovered at least"])
    return rows


def main() -> int:
    parts = {"put_get": bench_put_get, "memory": bench_memory, "dump": bench_dump,
             "pipeline": bench_pipeline, "killed": bench_killed}
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else parts
    rows = [row for name in parts if name in only for row in parts[name]()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print("\nflight recorder")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
