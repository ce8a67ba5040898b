"""TraceDB.messages() and ``procscope messages`` over a DB a real program recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB

PROGRAM = """
import multiprocessing as mp, queue, sys, threading
import procscope

def child(jobs, done):
    jobs_item = jobs.get()
    done.put(("done", jobs_item))

if __name__ == "__main__":
    procscope.setup(db=sys.argv[1], exporter="tracedb", sample_rate=1.0)
    ctx = mp.get_context("spawn")
    jobs = procscope.name(ctx.Queue(), "jobs")
    done = procscope.name(ctx.Queue(), "done")
    local = procscope.name(queue.Queue(), "local")
    worker = threading.Thread(target=lambda: local.get(), name="local-worker")
    worker.start()
    local.put(b"0123456789")
    worker.join()
    p = ctx.Process(target=child, args=(jobs, done))
    p.start()
    jobs.put("job-1")
    print(done.get(timeout=60))
    p.join(60)
    print(p.pid)
    procscope.shutdown()
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A trace DB with messages between threads and between processes; the child's pid."""
    folder = tmp_path_factory.mktemp("messages")
    script = folder / "program.py"
    script.write_text(PROGRAM)
    db = folder / "trace.db"
    result = subprocess.run(
        [sys.executable, str(script), str(db)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return db, int(result.stdout.strip().splitlines()[-1])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the procscope command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from procscope._cli import main; "
         "sys.exit(main(sys.argv[1:]))", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # wide enough for nothing to be cut
    )


def test_messages_pair_senders_and_receivers(recorded: tuple[Path, int]) -> None:
    """Each message has its queue, sender, receiver, wait and trace; filters narrow them."""
    db, child = recorded
    with TraceDB(db) as tdb:
        records = tdb.messages()
        by_queue = {r.queue: r for r in records}
        assert set(by_queue) == {"local", "jobs", "done"}
        local = by_queue["local"]
        assert local.sender.thread_name == "MainThread"
        assert local.receiver.thread_name == "local-worker" and local.size == 10
        assert by_queue["jobs"].receiver.pid == child
        assert by_queue["done"].sender.pid == child
        # The child's reply is in the trace of the job it answers.
        assert by_queue["done"].trace_id == by_queue["jobs"].trace_id
        for record in records:
            assert record.wait_ns is not None and record.wait_ns >= 0
            assert record.received_ns >= record.sent_ns
        assert [r.queue for r in tdb.messages(sender="Spawn*")] == ["done"]
        assert [r.queue for r in tdb.messages(receiver=str(child))] == ["jobs"]
        assert [r.queue for r in tdb.messages(receiver="local-*")] == ["local"]
        assert [r.queue for r in tdb.messages(queue="jo*")] == ["jobs"]
        assert tdb.messages(queue="nothing") == []
        assert len(tdb.messages(limit=1)) == 1
        later = tdb.messages(start_ns=by_queue["jobs"].sent_ns)
        assert "local" not in {r.queue for r in later}


def test_cli_lists_messages_as_a_table_and_as_json(recorded: tuple[Path, int]) -> None:
    """The table names queues and processes; --json has full records; --from filters."""
    db, child = recorded
    table = _cli("messages", "--db", str(db))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["SENT", "QUEUE", "FROM", "TO"]
    assert any("jobs" in line and f"SpawnProcess-1:{child}" in line for line in lines)
    data = json.loads(_cli("messages", "--db", str(db), "--json", "--from", str(child)).stdout)
    assert [d["queue"] for d in data] == ["done"]
    # The receiver, the program at the top, by its one name (as `processes` calls it).
    receiver = data[0]["receiver"]
    assert receiver["process_name"] == "program" and data[0]["sent"]
    assert receiver["actor"] == f"program:{receiver['pid']}"
    # The FROM column's own form, name:pid, is accepted back.
    same = _cli("messages", "--db", str(db), "--json", "--from", f"SpawnProcess-1:{child}")
    assert [d["queue"] for d in json.loads(same.stdout)] == ["done"]
    empty = _cli("messages", "--db", str(db), "--queue", "nope")
    assert empty.returncode == 0 and empty.stdout.strip() == "no messages match"


@pytest.mark.parametrize("content", [None, b"not a database at all"])
def test_cli_exits_2_with_one_line_on_an_unreadable_db(tmp_path: Path, content: Any) -> None:
    """A missing or foreign DB file: exit status 2 and a single line on stderr."""
    path = tmp_path / "trace.db"
    if content is not None:
        path.write_bytes(content)
    result = _cli("messages", "--db", str(path))
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("procscope messages:")


def test_message_pages_from_either_end_match_the_full_list(recorded: tuple[Path, int]) -> None:
    """A page of the first or the newest messages is the head or tail of the full list."""
    db, _ = recorded
    with TraceDB(db) as tdb:
        everything = [r.message_id for r in tdb.messages()]
        assert len(everything) == 3
        for size in (1, 2, 3, 5):
            assert [r.message_id for r in tdb.messages(limit=size)] == everything[:size]
            newest = [r.message_id for r in tdb.messages(limit=size, newest=True)]
            assert newest == everything[-size:]
