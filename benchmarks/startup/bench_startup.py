"""What procscope adds to starting a program and its children (issue 12's start-up goals).

Every variant runs once per round, the rounds interleaved so that machine noise hits
every variant alike; the table gives medians and the ratio against the plain variant of
the same row, all from ONE run:

- ``python -c pass``: plain, and under ``procscope run`` (trace DB, the default exporter);
- ``import procscope; procscope.setup(exporter='tracedb', db=...)`` against plain python;
- a Python subprocess (``subprocess.run([python, '-c', 'pass'])``) started by a program
  under ``procscope run`` against the same program plain (timed inside the program): a
  cheap child, which sets no pipeline up; one that imports logging, argparse and json
  (still cheap); and one that starts a thread, which sets up;
- ``multiprocessing.Process`` start+join with fork, spawn and forkserver, likewise;
- fork start+join at rate 0 after 200,000 messages, the parent's flight recorder ring
  full (what a fork child of a busy program inherits), and with 50,000 objects whose state
  the parent traces.

    python benchmarks/startup/bench_startup.py [--rounds N] [--inner K] [--against REV]

``--against REV`` adds, for every traced variant, the same run with commit REV checked
out into a temporary git worktree and its packages first on ``PYTHONPATH`` (the editable
install maps source folders, so REV's modules win), measured in the same rounds; this
tree's traced runs then get its own source folders on ``PYTHONPATH`` likewise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
PROCSCOPE = str(Path(PY).parent / "procscope")
ROOT = Path(__file__).resolve().parent.parent.parent
SOURCES = [
    "src",
    "core/procscope-core/src",
    "exporters/procscope-exporter-tracedb/src",
    "instrumentation/procscope-instrumentation-lifecycle/src",
    "instrumentation/procscope-instrumentation-messaging/src",
    "instrumentation/procscope-instrumentation-state/src",
    "processors/procscope-processor-sampling/src",
]

# Timed inside the program: K starts, the median printed in seconds. The first start of
# each kind (a forkserver's server, say) is left out as a warm-up.
INNER = """\
import multiprocessing, queue, statistics, subprocess, sys, time

THREAD = "import threading; t = threading.Thread(target=int); t.start(); t.join()"
LOGS = "import logging, argparse, json; logging.getLogger('x').info('y')"


def noop():
    pass

if __name__ == "__main__":
    what, k = sys.argv[1], int(sys.argv[2])
    if what == "fork-full":  # a busy program: 200,000 messages before its forks
        jobs = queue.Queue()
        for i in range(200_000):
            jobs.put(i)
            jobs.get()
        what = "fork"
    if what == "fork-objects":  # 50,000 objects whose state is traced (when traced)
        import os

        class Account:
            def __init__(self, n):
                self.balance = n

        if os.environ.get("PROCSCOPE_RUN_ID"):  # (under procscope run)
            import procscope

            Account = procscope.trace_state(Account)
        accounts = [Account(n) for n in range(50_000)]
        if os.environ.get("PROCSCOPE_RUN_ID"):
            # Their first snapshots stored first: the forks below measure the objects,
            # not a parent busy writing 50,000 snapshots (which a fork waits for).
            from opentelemetry import trace

            trace.get_tracer_provider().force_flush()
        what = "fork"
    times = []
    for i in range(k + 1):
        started = time.perf_counter()
        if what == "subprocess":
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        elif what == "subprocess-thread":  # a child that needs the pipeline: set up
            subprocess.run([sys.executable, "-c", THREAD], check=True)
        elif what == "subprocess-logging":  # a script's usual start: still cheap
            subprocess.run([sys.executable, "-c", LOGS], check=True)
        else:
            p = multiprocessing.get_context(what).Process(target=noop)
            p.start()
            p.join()
        if i:
            times.append(time.perf_counter() - started)
    print(statistics.median(times))
"""


class Variant:
    """One row's command: its plain form and its traced form."""

    def __init__(self, label: str, plain: list[str], traced: list[str], inner: bool) -> None:
        self.label = label
        self.plain = plain
        self.traced = traced
        self.inner = inner


def variants(db: str, script: str, k: int) -> list[Variant]:
    run = [PROCSCOPE, "run", "--db", db, "--"]
    setup = f"import procscope; procscope.setup(exporter='tracedb', db={db!r})"
    rows = [
        Variant(
            "procscope run -- python -c pass", [PY, "-c", "pass"], [*run, PY, "-c", "pass"], False
        ),
        Variant("import procscope; setup(tracedb)", [PY, "-c", "pass"], [PY, "-c", setup], False),
    ]
    labels = {"subprocess": "Python subprocess start",
              "subprocess-logging": "Python subprocess, logging",
              "subprocess-thread": "Python subprocess, a thread"}
    for what in ("subprocess", "subprocess-logging", "subprocess-thread", "fork", "spawn",
                 "forkserver"):
        label = labels.get(what, f"Process start+join, {what}")
        command = [PY, script, what, str(k)]
        rows.append(Variant(label, command, [*run, *command], True))
    # At a production rate the flight recorder is on: a fork child inherits its parent's
    # ring, full after 200,000 messages (the default 32 MiB, about 170,000 records).
    command = [PY, script, "fork-full", str(k)]
    at_rate_0 = [PROCSCOPE, "run", "--db", db, "--sample-rate", "0", "--"]
    rows.append(Variant("fork, parent's ring full (rate 0)", command, [*at_rate_0, *command],
                        True))
    command = [PY, script, "fork-objects", str(k)]
    rows.append(Variant("fork, 50,000 traced objects", command, [*run, *command], True))
    return rows


def measure(command: list[str], env: dict[str, str], cwd: str, inner: bool) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, check=True, cwd=cwd, stdout=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    return float(done.stdout.split()[-1]) if inner else elapsed


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f}ms"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inner", type=int, default=6, help="starts per inner program")
    parser.add_argument("--against", metavar="REV", help="also measure commit REV")
    args = parser.parse_args(argv[1:])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as tmp:
        old_env = None
        if args.against:
            old = os.path.join(tmp, "old")
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", old, args.against],
                check=True,
            )
            old_env = {**env, "PYTHONPATH": os.pathsep.join(os.path.join(old, s) for s in SOURCES)}
            # This tree the same way, so that both pay for the same import path.
            env = {**env, "PYTHONPATH": os.pathsep.join(str(ROOT / s) for s in SOURCES)}
        try:
            script = os.path.join(tmp, "starts.py")
            Path(script).write_text(INNER)
            forms = ["plain", "traced"] + (["old"] if old_env else [])
            # One DB per form: an earlier commit may not read a newer one's schema.
            rows_of = {
                form: variants(os.path.join(tmp, f"{form}.db"), script, args.inner)
                for form in forms
            }
            rows = rows_of["plain"]
            times: dict[tuple[str, str], list[float]] = {
                (row.label, form): [] for row in rows for form in forms
            }
            # Round 0 warms up (byte-code caches of a new worktree) and is not counted.
            for round_number in range(args.rounds + 1):
                for index, row in enumerate(rows):
                    for form in forms:
                        form_row = rows_of[form][index]
                        command = form_row.plain if form == "plain" else form_row.traced
                        form_env = old_env if form == "old" and old_env else env
                        if form == "plain":
                            form_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
                        took = measure(command, form_env, tmp, row.inner)
                        if round_number:
                            times[(row.label, form)].append(took)
        finally:
            if args.against:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", old], check=False
                )
    print(
        f"start-up, median of {args.rounds} interleaved rounds "
        f"(inner rows: median of {args.inner} starts inside the program)"
    )
    header = f"{'measure':36}{'plain':>10}{'procscope':>10}{'added':>10}{'ratio':>8}"
    if old_env:
        header += f"{args.against[:10]:>11}{'added':>10}"
    print(header)
    for row in rows:
        base = statistics.median(times[(row.label, "plain")])
        new = statistics.median(times[(row.label, "traced")])
        line = f"{row.label:36}{_ms(base)}{_ms(new)}{_ms(new - base)}{new / base:7.2f}x"
        if old_env:
            before = statistics.median(times[(row.label, "old")])
            line += f" {_ms(before)}{_ms(before - base)}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
