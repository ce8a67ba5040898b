"""A child's open files do not change while its code runs, with the mirror on."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_program

COUNTING = """
import multiprocessing as mp
import os
import queue
import sys
import time

import procscope
from opentelemetry import trace


def open_files(db):
    # The open files but the trace DB's: a child at 0.01 writes its sampled spans to the
    # DB itself when the DB's owner cannot take them (its relay queue is full, under
    # load: docs/tracedb.md), which opens the DB, by design.
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink("/proc/self/fd/" + fd))
        except OSError:  # (the listing's own fd, closed by now)
            pass
    db_files = (db, db + "-wal", db + "-shm", db + "-journal")
    return sorted(name for name in names if name not in db_files)


def count_files(results, db):
    if trace.get_current_span().get_span_context().trace_flags.sampled:
        # (one child in 100 is drawn sampled: its messages are spans, which its exporter
        # hands on through sockets of its own; it ends with no result, and another child
        # is started)
        return
    # (named: an unnamed queue is named from its source line, a file read once, when
    # its first sampled message becomes a span)
    jobs = procscope.name(queue.Queue(), "jobs")
    counts = set()
    seen = set()
    reference = None  # (the files, the DB's aside, at the first listing)
    reference_count = -1
    deadline = time.monotonic() + 1.0
    n = 0
    while time.monotonic() < deadline:  # ten mirror ticks, each with new records
        jobs.put(n)
        jobs.get()
        n += 1
        count = len(os.listdir("/proc/self/fd"))
        if count != reference_count:  # (resolved only when the plain count moves)
            files = open_files(db)
            if reference is None:
                reference, reference_count = files, count
            elif files != reference:  # (what changed, for the failure message)
                seen.update(set(files) ^ set(reference))
            counts.add(len(files))
    results.put((sorted(counts), sorted(seen)))


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    results = ctx.Queue()
    found = None
    while found is None:  # (until a child is unsampled: a sampled one puts nothing)
        child = ctx.Process(target=count_files, args=(results, sys.argv[1]))
        child.start()
        child.join()  # (its small result is in the pipe before it ends)
        if not results.empty():
            found = results.get(timeout=60)
    print(found)
    procscope.shutdown()
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_childs_open_files_stay_the_same_while_it_runs(tmp_path: Path, method: str) -> None:
    """A child at rate 0.01, its ring mirrored to disk every 100 ms, counts its open
    files thousands of times in a second of messages: always the same files, the trace
    DB's aside (the mirror keeps its file open rather than opening it at each tick)."""
    done = run_program(tmp_path, COUNTING, str(tmp_path / "flight.db"), method)
    assert done.returncode == 0, done.stderr
    counts, _open_then = eval(done.stdout.strip().splitlines()[-1])
    assert len(counts) == 1, done.stdout
