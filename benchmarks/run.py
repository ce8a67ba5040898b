"""Run every benchmark (benchmarks/*/bench_*.py), one after the other, each in its own
interpreter so that one benchmark's instrumentation cannot leak into the next.

    make bench                       # all of them
    make bench BENCH_ARGS="messaging" # only those whose path contains "messaging"
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = argv[1:]
    scripts = sorted(HERE.glob("*/bench_*.py"))
    if wanted:
        scripts = [s for s in scripts if any(w in str(s.relative_to(HERE)) for w in wanted)]
    if not scripts:
        print("no benchmark matched", wanted, file=sys.stderr)
        return 2
    failed = []
    for script in scripts:
        print(f"\n=== {script.relative_to(HERE.parent)}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], check=False)
        print(f"=== {script.name}: exit {result.returncode}, {time.perf_counter() - started:.0f} s")
        if result.returncode != 0:
            failed.append(script.name)
    if failed:
        print("\nfailed:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
