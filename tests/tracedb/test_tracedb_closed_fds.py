"""The trace DB when the program closes file descriptors it does not own (issue 14).

CPython's test_thread closes fds twice, and fork children call os.closerange(3, N): the
DB's SQLite fds are closed under the writer and their numbers given to the program's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys

from .test_tracedb_files import PROCSCOPE

_PROGRAM = """
import os, queue, threading
from opentelemetry import trace
import procscope

jobs = procscope.name(queue.Queue(), "jobs")

def work():
    for i in range(5):
        jobs.put(i)
    for i in range(5):
        jobs.get()

def round_of_work():
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    trace.get_tracer_provider().force_flush()

round_of_work()                 # the DB is open in this process now
os.closerange(3, 1024)          # the program closes fds it does not own
mine = [os.open(f"mine{i}.txt", os.O_RDWR | os.O_CREAT, 0o600) for i in range(8)]
round_of_work()
for fd in mine:
    os.close(fd)
"""


def test_a_program_closing_our_fds_keeps_its_files_and_its_spans(tmp_path: str) -> None:
    """A program that closes the DB's fds and opens its own files on those numbers finds
    its files untouched, and every span of the run is in the DB. (Some SQLite builds, as
    pyenv's 3.12 here, report 'locking protocol' once before the new connection takes
    over: docs/tracedb.md.)"""
    folder = str(tmp_path)
    script = os.path.join(folder, "program.py")
    with open(script, "w") as file:
        file.write(_PROGRAM)
    db = os.path.join(folder, "procscope.db")
    done = subprocess.run(
        [PROCSCOPE, "run", "--db", db, sys.executable, script],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PROCSCOPE_RAISE_INTERNAL_ERRORS"},
    )
    assert done.returncode == 0, done.stderr
    written = {
        name: os.path.getsize(os.path.join(folder, name))
        for name in os.listdir(folder)
        if name.startswith("mine")
    }
    assert written == {f"mine{i}.txt": 0 for i in range(8)}
    # closing(): a sqlite3 connection's own "with" ends a transaction, not the connection.
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (queue_spans,) = conn.execute(
            "SELECT count(*) FROM spans WHERE name IN ('put jobs', 'get jobs')"
        ).fetchone()
    assert queue_spans == 20, done.stderr


_LAYOUT_PROGRAM = """
import json, os, queue, threading
from opentelemetry import trace
import procscope

kept = os.open(os.devnull, os.O_RDONLY)        # the program keeps one descriptor
passing = os.open(os.devnull, os.O_RDONLY)     # and closes the next one later
jobs = procscope.name(queue.Queue(), "jobs")
worker = threading.Thread(target=lambda: [jobs.put(1), jobs.get()])
worker.start()
worker.join()
getattr(trace.get_tracer_provider(), "force_flush", lambda: None)()  # the first export
os.close(passing)

# CPython's test_os FileTests.test_closerange: two consecutive free descriptors.
first = os.open(os.devnull, os.O_RDONLY)
second = os.dup(first)
retries = 0
while second != first + 1 and retries <= 10:
    os.close(first)
    retries += 1
    first, second = second, os.dup(second)
print(json.dumps({"consecutive": second == first + 1, "retries": retries}))
"""


def test_the_dbs_descriptors_leave_no_hole_among_the_programs(tmp_path: str) -> None:
    """A descriptor the program closes after the first export leaves a hole its next two
    opens fill in order, as plainly (CPython's test_closerange needs two consecutive free
    descriptors): the DB's descriptors are not opened in the middle of the program's."""
    folder = str(tmp_path)
    script = os.path.join(folder, "program.py")
    with open(script, "w") as file:
        file.write(_LAYOUT_PROGRAM)
    db = os.path.join(folder, "procscope.db")
    outputs = []
    for command in (
        [sys.executable, script],
        [PROCSCOPE, "run", "--db", db, sys.executable, script],
    ):
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=folder, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout.splitlines()[-1]))
    plain, traced = outputs
    assert plain == {"consecutive": True, "retries": 0}
    assert traced == plain
