"""A failing thread's own queue: its records are in the dump, though the queue is freed
as the thread unwinds, while the dump's helper thread is still making spans."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, run_program

LOCAL = """
import queue
import sys
import threading

import procscope

procscope.setup(sample_rate=0.0, db=sys.argv[1])  # (every message in the ring)
jobs = procscope.name(queue.Queue(), "jobs")
for i in range(30_000):  # (a dump that takes its helper a while)
    jobs.put(i)
    jobs.get()


def work():
    mine = procscope.name(queue.Queue(), "mine")  # (freed when this thread ends)
    for i in range(50):
        mine.put(i)
        mine.get()
    raise ValueError("gave up")


worker = threading.Thread(target=work, name="worker")
worker.start()
worker.join()
procscope.shutdown()
"""


def test_a_failing_threads_own_queue_is_in_its_recording(tmp_path: Path) -> None:
    """The 50 messages a thread passed through its own local queue before raising are
    all in `procscope messages --queue mine`, received by the thread."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, LOCAL, str(db))
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--queue", "mine", "--limit", "1000")
    received = sorted(int(row["content"]) for row in rows
                      if row["receiver"] and row["receiver"]["thread_name"] == "worker")
    assert received == list(range(50))
