"""A fork child of a parent whose ring is full: it starts with an empty ring of its own,
and lets go of its copy of the parent's records a little at a time, not at the fork."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import cli, run_program

FULL_PARENT = """
import json
import multiprocessing as mp
import queue
import sys
import time

import procscope
from procscope.core import flight, inherited


def child(report):
    kept_at_start = inherited.pending()
    mine = procscope.name(queue.Queue(), "mine")
    for i in range(5):
        mine.put(f"child-{i}")
        mine.get()
    procscope.dump("child")
    deadline = time.monotonic() + 30
    while inherited.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    report.put(json.dumps({"kept_at_start": kept_at_start, "kept_after": inherited.pending()}))


if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, db=sys.argv[1], flight_memory="8MiB")
    jobs = procscope.name(queue.Queue(), "parent-jobs")
    for i in range(30_000):
        jobs.put(i)
        jobs.get()
    print(json.dumps({"parent_ring": len(flight._ring.records)}))
    ctx = mp.get_context("fork")
    report = ctx.SimpleQueue()
    worker = ctx.Process(target=child, args=(report,), name="forked")
    worker.start()
    print(report.get())
    worker.join()
    procscope.shutdown()
"""


def test_a_fork_child_keeps_its_parents_full_ring_aside_and_frees_it_later(
    tmp_path: Path,
) -> None:
    """The parent's 40,000-odd records are not freed at the fork (that cost the child's
    start up to 27 ms); the child frees them within seconds while it runs, and its dump
    holds its own five messages only."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, FULL_PARENT, str(db), timeout=120)
    assert done.returncode == 0, done.stderr
    parent, child = (json.loads(line) for line in done.stdout.splitlines())
    assert parent["parent_ring"] > 30_000
    assert child["kept_at_start"] >= parent["parent_ring"]
    assert child["kept_after"] == 0
    rows = cli("messages", "--db", str(db), "--limit", "100000")
    assert sorted(row["content"] for row in rows) == [f"child-{i}" for i in range(5)]


UNEXAMINED = """
import gc
import json
import os
import queue
import sys

import procscope
from procscope.core import flight

if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, exporter="none", flight_memory="1MiB")
    jobs = queue.Queue()
    gc.collect()
    # The ring fills, then every record appended pushes one out: the collector's count of
    # young objects no longer grows, so no collection examines the newest records.
    for i in range(3 * flight._ring.capacity):
        jobs.put(i)
        jobs.get()
    records = list(flight._ring.records)
    before = sum(map(gc.is_tracked, records))
    off = sys.argv[1] == "off"
    if off:
        gc.disable()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    after = sum(map(gc.is_tracked, records))
    print(json.dumps({"records": len(records), "before": before, "after": after}))
"""


def test_a_fork_leaves_its_children_no_records_for_the_collector_to_walk(
    tmp_path: Path,
) -> None:
    """Records a full ring took in have never been examined by the garbage collector, so
    a child's first collection would walk them all (20 ms for a full default ring, and a
    copy of every page it touches); the parent examines them once as it forks, and its
    children inherit them untracked. A program that turned the collector off is left as
    it is."""
    on = run_program(tmp_path, UNEXAMINED, "on")
    assert on.returncode == 0, on.stderr
    counts = json.loads(on.stdout)
    assert counts["records"] > 1000
    assert counts["before"] > counts["records"] // 2  # (the case this is about)
    assert counts["after"] == 0
    off = run_program(tmp_path, UNEXAMINED, "off")
    assert off.returncode == 0, off.stderr
    counts = json.loads(off.stdout)
    assert counts["after"] == counts["before"] > 0
