"""A dump names each record's thread, even where Python gave a thread's ident again to
a thread started after it ended (sequential threads nearly always share one)."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, run_program

REUSED = """
import queue, sys, threading
import procscope

def work(q, dump_here):
    for i in range(3):
        q.put(f"{threading.current_thread().name}-{i}")
        q.get()
    if dump_here:
        procscope.dump("look")

if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, db=sys.argv[1])
    q = procscope.name(queue.Queue(), "inbox")
    idents = set()
    for name in ("first", "second", "third"):
        thread = threading.Thread(target=work, args=(q, name == "third"), name=name)
        thread.start()
        thread.join()
        idents.add(thread.ident)
    print(len(idents))
    procscope.shutdown()
"""


def test_threads_that_shared_an_ident_are_told_apart(tmp_path: Path) -> None:
    """Three threads one after the other (two ended, the third alive at the dump): every
    message names the thread that sent it and the one that took it."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, REUSED, str(db))
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--queue", "inbox")
    assert len(rows) == 9
    for row in rows:
        thread = row["content"].strip("'").rsplit("-", 1)[0]
        assert row["sender"]["thread_name"] == thread, row
        assert row["receiver"]["thread_name"] == thread, row
    assert len({row["sender"]["thread_id"] for row in rows}) == 3
