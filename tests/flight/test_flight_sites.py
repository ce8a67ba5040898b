"""A new queue's first records name that queue, however many threads make queues at once."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, run_program

NEW_QUEUES = """
import queue
import sys
import threading

import procscope

procscope.setup(sample_rate=0.0, db=sys.argv[1])
sys.setswitchinterval(1e-6)  # (threads switch as often as they can: first records race)
kept = []


def work(t):
    for j in range(150):
        jobs = procscope.name(queue.Queue(), f"t{t}-q{j}")
        kept.append(jobs)  # (alive at the dump: its puts and gets are paired)
        jobs.put(f"{t}-{j}")
        jobs.get()


threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
procscope.dump("new queues")
procscope.shutdown()
"""


def test_concurrent_first_records_of_new_queues_name_their_own_queue(tmp_path: Path) -> None:
    """900 queues made and used by six threads at once: each message of the dump is on
    the queue it was put on, with both its ends (each queue's first put and first get
    register its call sites without a lock)."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, NEW_QUEUES, str(db))
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--limit", "100000")
    assert len(rows) == 900
    for row in rows:
        t, j = row["content"].split("-")
        assert row["queue"] == f"t{t}-q{j}", row
        assert row["sender"] is not None and row["receiver"] is not None, row
