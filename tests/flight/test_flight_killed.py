"""A worker SIGKILLed at a rate of 0.01: its parent writes out what its ring mirrored."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import cli, contents_received_by, run_program

KILLED = """
import multiprocessing as mp
import os
import signal
import sys
import time

import procscope


def work(jobs, taken, pace):
    while True:
        item = jobs.get()
        with taken.get_lock():
            taken.value += 1
        time.sleep(pace)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    busy = sys.argv[3] == "busy"
    jobs = procscope.name(ctx.Queue(), "jobs")
    taken = ctx.Value("i", 0)
    worker = ctx.Process(target=work, args=(jobs, taken, 0.002 if busy else 0), name="worker")
    worker.start()
    count = 2000 if busy else 200
    for i in range(count):
        jobs.put(i)
    # Idle: killed once it has taken everything and waits for more. Busy: killed while
    # it is still taking messages.
    while taken.value < (count // 4 if busy else count):
        time.sleep(0.01)
    if not busy:
        time.sleep(0.5)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    print(taken.value)
    procscope.shutdown()
    sys.exit(0 if worker.exitcode == -signal.SIGKILL else 5)
"""


@pytest.mark.parametrize("state", ["idle", "busy"])
def test_a_killed_workers_last_messages_are_recovered(
    tmp_path: Path, start_method: str, state: str
) -> None:
    """After a SIGKILL the DB shows the messages the worker took, oldest first and none
    missing before the last ones (an idle worker: every one), under the worker's own
    name, and a recording whose reason names the kill."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, KILLED, str(db), start_method, state)
    assert done.returncode == 0, done.stderr
    taken = int(done.stdout.split()[-1])
    received = contents_received_by(db, "worker")
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert [r["process_name"] for r in recordings].count("worker") == 1
    rows = cli("messages", "--db", str(db), "--to", "worker", "--limit", "100000")
    # Recovered: in a recording's trace, the worker's or (a message whose put the
    # parent's own recording joins: multiprocessing messages carry a stamp) the parent's.
    in_recordings = {r["trace_id"] for r in recordings}
    recovered = [int(r["content"]) for r in sorted(rows, key=lambda r: r["received_ns"])
                 if r["trace_id"] in in_recordings]
    if state == "idle":
        assert received == [str(i) for i in range(200)]
        assert len(received) == taken == 200
    else:
        # What the worker took in its last moments may not have reached the mirror (a
        # sampled message of those moments may be in the DB all the same: its span went
        # the ordinary way), but up to the last one recovered nothing is missing.
        numbers = [int(c) for c in received]
        last = max(recovered)
        assert sorted(n for n in numbers if n <= last) == list(range(last + 1))
        assert taken // 2 <= last < taken
    reasons = {r["process_name"]: r["reason"] for r in recordings}
    assert "killed by SIGKILL" in reasons["worker"]
    assert "killed by SIGKILL" in reasons["MainProcess"]
