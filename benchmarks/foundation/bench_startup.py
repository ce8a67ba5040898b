"""What procscope adds to a program's start and exit.

Runs, interleaved round by round so that machine noise hits every variant alike, and
reports medians and the time added against plain ``python -c pass``:

- plain: ``python -c pass``
- setup(): ``import procscope; procscope.setup(exporter="none")``
- setup() + tracedb: the same, recording one span into a trace DB
- procscope run: ``procscope run --exporter none -- python -c pass``
- auto-launch + tracedb: ``procscope run -- python -c <one span>`` (default exporter)

    python benchmarks/foundation/bench_startup.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
PROCSCOPE = str(Path(PY).parent / "procscope")
ONE_SPAN = (
    "from opentelemetry import trace\n"
    "with trace.get_tracer('bench').start_as_current_span('one'): pass\n"
)


def variants(db: str) -> dict[str, list[str]]:
    return {
        "plain python": [PY, "-c", "pass"],
        "setup(exporter=none)": [PY, "-c", "import procscope; procscope.setup(exporter='none')"],
        "setup() + tracedb, 1 span": [
            PY,
            "-c",
            f"import procscope; procscope.setup(db={db!r})\n" + ONE_SPAN,
        ],
        "procscope run, exporter none": [
            PROCSCOPE,
            "run",
            "--exporter",
            "none",
            "--",
            PY,
            "-c",
            "pass",
        ],
        "procscope run + tracedb, 1 span": [PROCSCOPE, "run", "--db", db, "--", PY, "-c", ONE_SPAN],
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    with tempfile.TemporaryDirectory() as tmp:
        runs = variants(os.path.join(tmp, "bench.db"))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, command in runs.items():
                started = time.perf_counter()
                subprocess.run(command, env=env, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["plain python"])
    print(f"start+exit of a program, median of {rounds} interleaved rounds")
    print(f"{'variant':34} {'median':>9} {'added':>9} {'ratio':>7}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{name:34} {median * 1e3:7.1f}ms {(median - base) * 1e3:7.1f}ms {median / base:6.2f}x"
        )


if __name__ == "__main__":
    main()
