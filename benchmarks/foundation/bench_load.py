"""Full speed, many processes: is every message recorded, or the exact shortfall reported?
(issue 12's goal "8 processes x 4 threads at full speed for 20 s").

    python benchmarks/foundation/bench_load.py [--seconds 20] [--procs 8] [--threads 4]

A program forks ``--procs`` workers; in each, half the ``--threads`` threads put ints on a
``queue.Queue`` as fast as they can for ``--seconds`` and the other half get them. Each
worker reports exactly how many puts and gets it made. The program runs plain, then under
``procscope run`` at its defaults (full recall, trace DB, ``overflow=wait``). Afterwards the
trace DB is read as a user would (``TraceDB``: spans per process, the ``losses`` table that
every read command reports in its "recording incomplete" line), and for each worker:

* made: its puts + gets (each should be one send or one receive span);
* stored: its send and receive spans in the DB;
* shortfall: made - stored, the message spans missing;
* reported: what the DB says that process lost (every reason; a lost record may also be
  a thread's or a process's span, so reported >= shortfall when nothing is hidden).

The goal is met when, for every worker, shortfall == 0, or reported >= shortfall (the
shortfall is reported, not silent). Throughput (messages per second, plain and traced) is
printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
PROCSCOPE = str(Path(PY).parent / "procscope")

PROGRAM = r"""
import json, multiprocessing, os, queue, sys, threading, time

STOP = None

def worker(seconds, threads, results):
    q = queue.Queue(maxsize=10_000)
    producers, consumers = max(1, threads // 2), max(1, threads - threads // 2)
    puts = [0] * producers
    gets = [0] * consumers
    deadline = time.monotonic() + seconds

    def produce(i):
        n = 0
        while time.monotonic() < deadline:
            for _ in range(100):
                q.put(n)
                n += 1
        puts[i] = n

    def consume(i):
        n = 0
        while q.get() is not STOP:
            n += 1
        gets[i] = n + 1  # the STOP too

    ts = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    cs = [threading.Thread(target=consume, args=(i,)) for i in range(consumers)]
    for t in ts + cs:
        t.start()
    for t in ts:
        t.join()
    for _ in cs:
        q.put(STOP)
    for t in cs:
        t.join()
    results.put((os.getpid(), sum(puts) + len(cs), sum(gets)))

if __name__ == "__main__":
    seconds, procs, threads = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    started = time.perf_counter()
    workers = [ctx.Process(target=worker, args=(seconds, threads, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    got = [results.get() for _ in workers]
    inside = time.perf_counter() - started
    for w in workers:
        w.join()
    print(json.dumps({"inside": inside, "workers": got,
                      "exitcodes": [w.exitcode for w in workers]}))
"""


def run(args: argparse.Namespace, traced: bool, db: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(PROGRAM)
    command = [PY, file.name, str(args.seconds), str(args.procs), str(args.threads)]
    if traced:
        command = [PROCSCOPE, "run", "--db", db, "--", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    os.unlink(file.name)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}): {result.stderr[-2000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def stored_by_pid(db: str) -> tuple[dict[int, int], dict[int, int], dict[str, int]]:
    """The workers' queue.Queue message spans (sends and receives) and the losses
    reported, per pid."""
    from procscope.exporters.tracedb import TraceDB

    with TraceDB(db) as trace_db:
        rows = trace_db.conn.execute(
            "SELECT pid, count(*) FROM spans WHERE kind IN (3, 4) "
            "AND json_extract(attributes, '$.\"messaging.system\"') = 'python_queue' "
            "GROUP BY pid"
        ).fetchall()
        losses: dict[int, int] = {}
        reasons: dict[str, int] = {}
        for loss in trace_db.losses():
            losses[loss.pid] = losses.get(loss.pid, 0) + loss.count
            reasons[loss.reason] = reasons.get(loss.reason, 0) + loss.count
    return {pid: n for pid, n in rows}, losses, reasons


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "load.db")
        plain = run(args, False, db)
        traced = run(args, True, db)
        stored, reported, reasons = stored_by_pid(db)
    made_plain = sum(p + g for _, p, g in plain["workers"])
    print(
        f"{args.procs} processes x {args.threads} threads, {args.seconds:g} s at full speed; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"plain: {made_plain:,} message operations, {made_plain / plain['inside']:,.0f}/s; "
        f"traced: whole command {traced['wall']:.1f} s"
    )
    print("| worker | made (puts+gets) | stored spans | shortfall | reported lost | ok |")
    print("| --- | --- | --- | --- | --- | --- |")
    all_ok = True
    total_made = total_stored = 0
    for pid, puts, gets in traced["workers"]:
        made = puts + gets
        have = stored.get(pid, 0)
        shortfall = max(made - have, 0)
        said = reported.get(pid, 0)
        ok = shortfall == 0 or said >= shortfall
        all_ok = all_ok and ok
        total_made += made
        total_stored += have
        verdict = "yes" if ok else "NO"
        print(f"| {pid} | {made:,} | {have:,} | {shortfall:,} | {said:,} | {verdict} |")
    print(
        f"traced: {total_made:,} message operations, "
        f"{total_made / traced['inside']:,.0f}/s inside the program; "
        f"{total_stored:,} stored ({total_stored / max(total_made, 1):.1%})"
    )
    print(
        "reported losses by reason:",
        ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) or "none",
    )
    print(
        "goal (every message recorded, or the exact shortfall reported):",
        "met" if all_ok else "NOT met",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
