"""A busy child's backlog at its exit, at full recall into the trace DB (issue 12: full
recall means full; the exit budget must not turn into silent or counted losses).

A fork child records messages faster than the trace DB takes them, then ends: its exit
flush goes on past the 0.5 s budget while it makes progress, so every message it handled
is stored, and the DB reports no loss.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

from procscope.exporters.tracedb import TraceDB

MESSAGES = 12_000

PROGRAM = textwrap.dedent(
    """
    import multiprocessing, queue, sys
    import procscope

    procscope.setup(db=sys.argv[1], exporter="tracedb")  # the defaults: full recall, wait

    def busy(n):
        q = queue.Queue()
        for i in range(n):
            q.put(i)
            q.get()

    if __name__ == "__main__":
        child = multiprocessing.get_context("fork").Process(target=busy, args=(int(sys.argv[2]),))
        child.start()
        child.join()
        print(child.pid, child.exitcode, flush=True)
        procscope.shutdown()
    """
)


def test_a_busy_fork_childs_backlog_is_stored_not_lost(tmp_path: Path) -> None:
    """Every message the child handled is in the DB with both ends, and nothing is
    reported lost, though the child's backlog took longer than its exit budget."""
    db = tmp_path / "t.db"
    app = tmp_path / "app.py"
    app.write_text(PROGRAM)
    result = subprocess.run(
        [sys.executable, str(app), str(db), str(MESSAGES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pid, exitcode = (int(x) for x in result.stdout.split())
    assert exitcode == 0
    with closing(sqlite3.connect(db)) as conn:
        (messages,) = conn.execute(
            "SELECT count(*) FROM spans WHERE pid = ? AND kind IN (3, 4) AND "
            """json_extract(attributes, '$."messaging.system"') = 'python_queue'""",
            (pid,),
        ).fetchone()
    with TraceDB(str(db)) as reader:
        lost = [(r.pid, r.reason, r.count) for r in reader.losses()]
    assert lost == []
    assert messages == 2 * MESSAGES
