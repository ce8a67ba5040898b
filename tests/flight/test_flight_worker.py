"""A worker that fails at a rate of 0.01: its last messages are in the DB all the same."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, contents_received_by, run_program

RAISES = """
import multiprocessing as mp
import sys

import procscope


@procscope.trace_state(name="tally")
class Tally:
    def __init__(self):
        self.last = None


def work(jobs, n):
    tally = Tally()
    for i in range(n + 1):
        item = jobs.get()
        tally.last = item
        if i == n:
            raise ValueError(f"bad item {item}")


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    jobs = procscope.name(ctx.Queue(), "jobs")
    worker = ctx.Process(target=work, args=(jobs, 300), name="worker")
    worker.start()
    for i in range(301):
        jobs.put(i)
    worker.join()
    procscope.shutdown()
    sys.exit(0 if worker.exitcode == 1 else 5)
"""


def test_a_worker_that_raises_leaves_its_last_messages(tmp_path: Path, start_method: str) -> None:
    """Every message the worker took before it raised is shown as received by it, in the
    order it took them, through the queue it used, and each value its traced object took
    after them, in order; the dump names the exception."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, RAISES, str(db), start_method)
    assert done.returncode == 0, done.stderr
    assert contents_received_by(db, "worker") == [str(i) for i in range(301)]
    rows = cli("messages", "--db", str(db), "--to", "worker", "--limit", "1000")
    assert {row["queue"] for row in rows} == {"jobs"}
    # The one-command answer: the worker's timeline ends with the items it took.
    timeline = cli("timeline", "worker", "--db", str(db), "--last", "40")["entries"]
    taken = [e["content"] for e in timeline if e["kind"] == "received"]
    assert taken[-3:] == [298, 299, 300]
    history = cli("state", "tally#1", "--db", str(db))["history"]
    lasts = [c["values"][0] for c in history if c["kind"] == "change" and c["fields"] == ["last"]]
    assert [str(v) for v in lasts][-300:] == [str(i) for i in range(1, 301)]
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert [r["process_name"] for r in recordings] == ["worker"]
    assert "ValueError: bad item 300" in recordings[0]["reason"]
