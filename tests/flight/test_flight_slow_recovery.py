"""The program's end waits for the recovery of a crashed child's records.

A child whose exit cuts its own recording short leaves its records for its parent, which
recovers them on a helper thread. On a loaded machine the recovery reads and pairs every
record for a second or more before it hands on its first span; the shutdown used to wait
for dumps only while they handed spans on, closed the processors under the recovery, and
the child's last messages were lost without a word (seen as a flaky test under load).
Here the machine's slowness is made certain: the parent's recovery starts 2.5 s late, and
the child's own dump is held until its exit has cut it off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import cli, run_program

SLOW_RECOVERY = """
import multiprocessing as mp
import os
import queue
import sys
import time

import procscope
from opentelemetry import trace
from procscope.core import _flight_mirror, _flight_spans, _flight_stage


def work(count):
    if trace.get_current_span().get_span_context().trace_flags.sampled:
        return  # (one worker in 100 is drawn sampled: its messages would be spans)
    q = procscope.name(queue.Queue(), "inbox")
    for i in range(count):
        q.put(i)
        q.get()
    time.sleep(0.3)  # (the mirror's thread copies every 100 ms)
    raise RuntimeError("worker gives up")


def late(function):
    def wrapper(*args, **kwargs):
        if os.getpid() == PARENT:
            time.sleep(2.5)  # a recovery on a loaded machine: no span for seconds
        return function(*args, **kwargs)
    return wrapper


def held_in_the_child(function):
    def wrapper(*args, **kwargs):
        if os.getpid() != PARENT:
            time.sleep(5)  # the child's own dump, cut short by its exit
        return function(*args, **kwargs)
    return wrapper


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    PARENT = os.getpid()
    _flight_mirror.recover = late(_flight_mirror.recover)
    _flight_stage.revive = late(_flight_stage.revive)
    _flight_spans._send = held_in_the_child(_flight_spans._send)
    exitcode = 0
    while exitcode == 0:  # (until a worker is unsampled: a sampled one ends at once, with 0)
        worker = mp.get_context("fork").Process(target=work, args=(int(sys.argv[2]),),
                                                name="worker")
        worker.start()
        worker.join()
        exitcode = worker.exitcode
    print(exitcode)
    if sys.argv[3] == "shutdown":
        procscope.shutdown()
"""

MESSAGES = 5_000


@pytest.mark.parametrize("end", ["shutdown", "exit"])
def test_a_slow_recovery_of_a_crashed_child_is_waited_for(tmp_path: Path, end: str) -> None:
    """Every message the crashed worker got is in ``procscope messages``, whether the
    program calls ``procscope.shutdown()`` or just ends."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, SLOW_RECOVERY, str(db), str(MESSAGES), end, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"
    rows = cli("messages", "--db", str(db), "--to", "worker", "--limit", "1000000")
    got = sorted(int(row["content"]) for row in rows if row["queue"] == "inbox")
    assert got == list(range(MESSAGES)), f"{len(got)} of {MESSAGES} messages"
