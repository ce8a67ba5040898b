"""Export benchmark: ``procscope export`` of the 1,000,000-span DB, both formats.

    python benchmarks/tracedb/bench_export.py                  # 1,000,000 spans
    python benchmarks/tracedb/bench_export.py --spans 100000   # quicker

The DB is ``big_db.cached_big_db`` (the same file as the tests' ``big_db`` fixture: 5
runs of a 40-process program, messages, state changes, crashes; built once and cached
under the temp dir). Each export runs the CLI in its own process, as a user does
(``procscope export --run all``), and is timed from start to exit; its peak memory is
the child's maximum resident set size (``getrusage(RUSAGE_CHILDREN)``, read after each
export in a fresh helper process, so that one export's peak does not hide the next's).
Reported: wall time, spans per second, the file's size, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from big_db import cached_big_db

PROCSCOPE = os.path.join(os.path.dirname(sys.executable), "procscope")
FORMATS = ("perfetto", "otlp-json")

# Runs one export and prints its peak RSS (KiB): the export is this helper's child.
_MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(done.returncode, wall, peak, repr(done.stderr.strip()))
"""


def _export(db: str, fmt: str, out: str, run: str | None) -> tuple[float, int]:
    command = [PROCSCOPE, "export", "--db", db, "--format", fmt, "-o", out]
    if run is not None:
        command += ["--run", run]
    line = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=3)
    if line[0] != "0":
        raise SystemExit(f"export failed: {line[3]}")
    return float(line[1]), int(line[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="exports per format")
    args = parser.parse_args()
    db = cached_big_db(args.spans)
    spans = sqlite3.connect(db).execute("SELECT count(*) FROM spans").fetchone()[0]
    help_text = subprocess.run([PROCSCOPE, "export", "--help"], capture_output=True, text=True)
    run = "all" if "--run" in help_text.stdout else None
    print(f"DB: {db} ({spans:,} spans, {os.path.getsize(db) / 2**20:.0f} MiB)")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for fmt in FORMATS:
            out = os.path.join(folder, "export." + ("pftrace" if fmt == "perfetto" else "json"))
            for _ in range(args.rounds):
                wall, peak_kib = _export(db, fmt, out, run)
                size = os.path.getsize(out)
                rows.append((fmt, wall, spans / wall, size / 2**20, peak_kib / 1024))
                print(
                    f"{fmt:10} {wall:7.1f} s  {spans / wall:9,.0f} spans/s  "
                    f"{size / 2**20:7.0f} MiB  peak RSS {peak_kib / 1024:5.0f} MiB",
                    flush=True,
                )
    print(json.dumps({"spans": spans, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
