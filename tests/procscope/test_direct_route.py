"""Records straight into the trace DB: when it is procscope's only consumer the recorder
stores records itself (no batch processor); otherwise they go through the processors.
Either way every record appended before a flush is stored by it, and the program's own
spans are stored too."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest

PROGRAM = """
import queue, sqlite3, sys, threading
import procscope
from opentelemetry import trace
from procscope._api import current_scope
procscope.setup(exporter="tracedb", db="app.db", sampling=sys.argv[1])
recorder = current_scope().processors[0]
print("direct" if recorder.sink is not None else "processors")
jobs = queue.Queue()

def worker():
    for _ in range(3000):
        jobs.get()

thread = threading.Thread(target=worker)
thread.start()
with trace.get_tracer("app").start_as_current_span("own"):
    for i in range(3000):
        jobs.put(i)
thread.join()
current_scope().force_flush()
db = sqlite3.connect("app.db")
print(db.execute("SELECT count(*) FROM spans WHERE kind IN (3, 4)").fetchone()[0])
"""


@pytest.mark.parametrize(("sampling", "route"), [("head", "direct"), ("tail", "processors")])
def test_records_reach_the_db_by_their_route(
    run_app: Any, tmp_path: Any, sampling: str, route: str
) -> None:
    """Head sampling with the trace DB alone takes the direct route, tail sampling the
    processors'; a flush stores every message made before it, and at exit the
    program's own span, the thread's and the process's are stored, nothing lost."""
    result = run_app(PROGRAM.replace("sys.argv[1]", repr(sampling)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [route, "6000"]
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as db:
        names = {name for (name,) in db.execute("SELECT name FROM spans")}
        spans = db.execute("SELECT count(*) FROM spans WHERE kind IN (3, 4)").fetchone()[0]
        lost = db.execute("SELECT count(*) FROM losses").fetchone()[0]
    assert "own" in names and any(name.startswith("thread ") for name in names)
    assert spans == 6000
    assert lost == 0
