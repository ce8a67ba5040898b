"""A worker whose own recording cannot be written before it exits (its exit waits only
a fraction of a second for it): its mirror is kept, and the parent makes the recording
from it, so the worker's last messages are not lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import cli, run_program

BUSY_THEN_FAILS = """
import multiprocessing as mp
import queue
import sys
import time

import procscope
from opentelemetry import trace


def work(count):
    if trace.get_current_span().get_span_context().trace_flags.sampled:
        return  # (one worker in 100 is drawn sampled: its messages would be spans)
    q = procscope.name(queue.Queue(), "inbox")
    for i in range(count):
        q.put(i)
        q.get()
    outbox = queue.Queue()  # (no name given: named where it was made)
    for i in range(5):
        outbox.put(i)
        outbox.get()
    time.sleep(0.3)  # (the mirror's thread copies every 100 ms)
    raise RuntimeError("worker gives up")


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    exitcode = 0
    while exitcode == 0:  # (until a worker is unsampled: a sampled one ends at once, with 0)
        worker = mp.get_context(sys.argv[2]).Process(
            target=work, args=(int(sys.argv[3]),), name="worker")
        worker.start()
        worker.join()
        exitcode = worker.exitcode
    print(exitcode)
    procscope.shutdown()
"""

# 40,000 records: about a second of work for the worker's dump, beyond the 0.3 s its
# exit waits for it and the 0.5 s exit flush (on a faster machine the worker's own
# recording holds them all: the test asserts what the user sees, either way).
MESSAGES = 20_000


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_worker_cut_off_before_its_recording_is_written_loses_no_message(
    tmp_path: Path, method: str
) -> None:
    """The worker's last message is in the DB, and none before it is missing; a queue
    it did not name is named where it was made, as while it lived."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, BUSY_THEN_FAILS, str(db), method, str(MESSAGES),
                       timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"
    rows = cli("messages", "--db", str(db), "--to", "worker", "--limit", "1000000")
    contents = [int(row["content"]) for row in rows if row["queue"] == "inbox"]
    got = set(contents)
    assert max(got, default=-1) == MESSAGES - 1
    missing = set(range(MESSAGES)) - got
    assert not missing, f"{len(missing)} of {MESSAGES} missing, first {sorted(missing)[:5]}"
    # Each once: the worker's own recording and the parent's make the same spans.
    assert len(contents) == len(got), f"{len(contents) - len(got)} messages twice"
    outbox = cli("messages", "--db", str(db), "--queue", "outbox@program.py:*")
    assert sorted({int(row["content"]) for row in outbox}) == list(range(5)), outbox
    reasons = [r["reason"] for r in cli("traces", "--db", str(db), "--recordings")["recordings"]]
    assert any("worker" in reason for reason in reasons), reasons
