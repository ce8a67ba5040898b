"""A failing thread's or process target's own queue: its records are in the dump, with
each message's two ends, though the queue is freed as the failure unwinds, before or
while the dump's helper thread makes spans."""

from __future__ import annotations

from pathlib import Path

import pytest

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


PROCESS_LOCAL = """
import multiprocessing as mp
import queue
import sys

import procscope


def work():
    mine = procscope.name(queue.Queue(), "mine")  # (freed as the failure unwinds)
    for i in range(50):
        mine.put(i)
        mine.get()
    if sys.argv[3] == "raise":
        raise ValueError("gave up")
    sys.exit(3)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, db=sys.argv[1])
    child = mp.get_context(sys.argv[2]).Process(target=work, name="worker")
    child.start()
    child.join()
    procscope.shutdown()
"""


@pytest.mark.parametrize(("method", "ending"),
                         [("fork", "raise"), ("spawn", "raise"), ("fork", "exit")])
def test_a_failing_process_targets_own_queue_keeps_each_messages_sender(
    tmp_path: Path, method: str, ending: str
) -> None:
    """A process target's own queue is freed as its exception is let go, before the
    dump its failure (or its sys.exit(3)) triggers at the process's end: its puts were no
    longer paired with their gets there, and every message of `procscope messages` had
    no sender. Each of the 50 now has both ends, the worker's put and its get."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, PROCESS_LOCAL, str(db), method, ending)
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--queue", "mine", "--limit", "1000")
    ends = sorted((int(row["content"]), row["sender"] and row["sender"]["process_name"],
                   row["receiver"] and row["receiver"]["process_name"]) for row in rows)
    assert ends == [(i, "worker", "worker") for i in range(50)]
