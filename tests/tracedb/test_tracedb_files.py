"""The DB file: read commands create nothing beside it, for its owner or another user."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter

PROCSCOPE = os.path.join(os.path.dirname(sys.executable), "procscope")
NOBODY = 65534

_PROGRAM = textwrap.dedent(
    """
    import queue, threading
    import procscope

    class Account:
        def __init__(self):
            self.balance = 0

    account = procscope.trace_state(Account(), name="account")
    jobs = procscope.name(queue.Queue(), "jobs")
    worker = threading.Thread(target=lambda: jobs.get())
    worker.start()
    jobs.put("job 1")
    account.balance = 5
    worker.join()
    """
)


@pytest.fixture
def shared_folder() -> Iterator[str]:
    """A folder under /tmp that other users may enter and read, but not write."""
    folder = tempfile.mkdtemp(prefix="procscope-files-")
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_program(db: str, folder: str) -> None:
    script = os.path.join(folder, "program.py")
    if not os.path.exists(script):
        with open(script, "w") as file:
            file.write(_PROGRAM)
    done = subprocess.run(
        [PROCSCOPE, "run", "--db", db, sys.executable, script],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _read_commands(db: str) -> list[list[str]]:
    """Every read command of the contract, on the program's DB."""
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        trace = conn.execute("SELECT hex(trace_id) FROM traces LIMIT 1").fetchone()[0].lower()
        pid = conn.execute("SELECT pid FROM spans LIMIT 1").fetchone()[0]
    finally:
        conn.close()
    return [
        ["traces", "--db", db],
        ["traces", "--db", db, "--json"],
        ["show", trace, "--db", db],
        ["processes", "--db", db],
        ["messages", "--db", db],
        ["state", "account", "--db", db],
        ["state", "account", "--at", "2262-01-01", "--db", db],
        ["runs", "--db", db],
        ["timeline", str(pid), "--db", db],
    ]


def _digest(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def _listing(folder: str) -> dict[str, tuple[int, int, int]]:
    """Every file in the folder with its owner, mode and size."""
    found = {}
    for name in sorted(os.listdir(folder)):
        info = os.stat(os.path.join(folder, name))
        found[name] = (info.st_uid, info.st_mode, info.st_size)
    return found


def _span_count(db: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])
    finally:
        conn.close()


def test_read_commands_leave_the_folder_as_they_found_it(shared_folder: str) -> None:
    """After a program has finished, every read command runs and no -wal/-shm appears."""
    db = os.path.join(shared_folder, "procscope.db")
    _run_program(db, shared_folder)
    before, digest = _listing(shared_folder), _digest(db)
    for command in _read_commands(db):
        done = subprocess.run([PROCSCOPE, *command], capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert _listing(shared_folder) == before, command
        assert _digest(db) == digest, command  # not a byte changed


def test_a_db_left_in_wal_mode_is_read_without_new_files(shared_folder: str) -> None:
    """A DB still in WAL mode with no -wal file (its last writer was killed, or another
    connection was open when it closed) is read without creating -wal or -shm."""
    db = os.path.join(shared_folder, "procscope.db")
    _run_program(db, shared_folder)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()  # the last connection: SQLite removes its -wal and -shm, WAL mode stays
    with open(db, "rb") as file:
        assert file.read(20)[18] == 2  # WAL mode in the header
    for leftover in (db + "-wal", db + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    before, digest = _listing(shared_folder), _digest(db)
    for command in _read_commands(db):
        done = subprocess.run([PROCSCOPE, *command], capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert _listing(shared_folder) == before, command
        assert _digest(db) == digest, command


def test_a_db_whose_writer_is_alive_is_read(db_path: str, make_span: Any) -> None:
    """While a writer holds the DB open in WAL mode (its -wal and -shm exist, a span is
    committed), every read command reads it, the span included."""
    exporter = TraceDBSpanExporter(db_path)
    try:
        assert exporter.export([make_span("while-alive", trace_id=7, span_id=7)]).name == "SUCCESS"
        assert os.path.exists(db_path + "-wal")
        for command in (
            ["traces"],
            ["show", format(7, "032x")],
            ["processes"],
            ["messages"],
            ["runs"],
            ["timeline", str(os.getpid())],
        ):
            done = subprocess.run(
                [PROCSCOPE, *command, "--db", db_path], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, (command, done.stderr)
        listing = subprocess.run(
            [PROCSCOPE, "traces", "--db", db_path, "--run", "all"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "while-alive" in listing.stdout
    finally:
        exporter.shutdown()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_another_user_reads_without_leaving_files_and_the_owner_runs_again(
    shared_folder: str,
) -> None:
    """A user who may read the DB but not write its folder gets answers, leaves nothing,
    and the owner's next run records as before."""
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c", "pass"], capture_output=True, check=False, cwd="/"
    )
    if probe.returncode != 0:
        # A pyenv interpreter under /root loads its libpython from a folder only root
        # may read: the other user cannot start this Python at all, procscope or not.
        pytest.skip(f"user {NOBODY} cannot run {sys.executable} here")
    db = os.path.join(shared_folder, "procscope.db")
    _run_program(db, shared_folder)
    os.chmod(db, 0o644)  # the owner lets others read it
    before = _listing(shared_folder)
    for command in _read_commands(db):
        done = subprocess.run(
            [*as_nobody, PROCSCOPE, *command],
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, HOME="/tmp"),
            cwd="/",
        )
        assert done.returncode == 0, (command, done.stderr)
        assert _listing(shared_folder) == before, command
    spans = _span_count(db)
    _run_program(db, shared_folder)
    assert _span_count(db) > spans


def _export_one(path: str, make_span: Any, name: str = "new") -> str:
    exporter = TraceDBSpanExporter(path)
    outcome = exporter.export([make_span(name, trace_id=1, span_id=1)])
    exporter.shutdown()
    return outcome.name


def _file_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "another owner"])
def test_a_db_file_others_can_write_is_refused_and_spans_go_beside_it(
    tmp_path: Any, make_span: Any, procscope_warnings: Any, how: str
) -> None:
    """A pre-created DB file that others could write (or own) is not written: one warning
    names it and why, and the spans go to a fresh 0600 file beside it (procscope.1.db)."""
    if how == "another owner" and os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    path = str(tmp_path / "procscope.db")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    if how == "another owner":
        os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(path, 0o666 if how == "world-writable" else 0o620)
    before = os.stat(path)
    assert _export_one(path, make_span) == "SUCCESS"
    assert _export_one(path, make_span, "again") == "SUCCESS"
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    fresh = str(tmp_path / "procscope.1.db")
    assert os.stat(fresh).st_mode & 0o777 == 0o600
    with TraceDB(fresh) as db:
        assert sorted(s.name for s in db.spans()) == ["again", "new"]
    warnings = [r.getMessage() for r in procscope_warnings()]
    assert len(warnings) == 1, warnings
    assert path in warnings[0] and fresh in warnings[0]
    reason = "owned by uid 65534" if how == "another owner" else "writable by others"
    assert reason in warnings[0]


def test_a_damaged_db_is_left_as_it_is_and_a_program_writes_beside_it(
    shared_folder: str, make_span: Any
) -> None:
    """Bytes overwritten in the middle of a page: a program run under procscope says so
    once, records into procscope.1.db, and leaves the damaged file byte for byte."""
    db = os.path.join(shared_folder, "procscope.db")
    exporter = TraceDBSpanExporter(db)
    for trace in range(20):
        spans = [make_span(f"old {trace}.{i}", trace_id=trace + 1, span_id=trace * 100 + i + 1,
                           attributes={"pad": "x" * 200}) for i in range(100)]  # fmt: skip
        assert exporter.export(spans).name == "SUCCESS"
    exporter.shutdown()
    page_size = 4096
    with open(db, "r+b") as file:
        pages = os.path.getsize(db) // page_size
        file.seek((pages // 3) * page_size + 1500)
        file.write(bytes(range(256))[:200])
    damaged = _file_bytes(db)
    done = subprocess.run(
        [PROCSCOPE, "run", "--db", db, sys.executable, "-c", _PROGRAM],
        capture_output=True,
        text=True,
        cwd=shared_folder,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PROCSCOPE_RAISE_INTERNAL_ERRORS"},
    )
    assert done.returncode == 0, done.stderr
    fresh = os.path.join(shared_folder, "procscope.1.db")
    assert done.stderr.count(f"not writing to the trace DB {db}: its pages are damaged") == 1, (
        done.stderr
    )
    assert fresh in done.stderr
    assert _file_bytes(db) == damaged
    with TraceDB(fresh) as reader:
        names = {s.name for s in reader.spans()}
    assert names and not any(name.startswith("old ") for name in names)
