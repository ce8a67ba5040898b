"""The span backlog: a burst is stored at once as compact rows and made into span rows
later (when the program idles, at its end, or at ``force_flush``), the same rows the
direct route makes; until then read commands say how many spans wait."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter, _backlog, _schema

from .test_tracedb_plain import recorded, work  # noqa: F401 -- (the fixture, and its workload)

CLI = str(Path(sys.executable).parent / "procscope")
TABLES = ("spans", "events", "links", "span_attrs", "event_attrs", "traces", "runs",
          "run_pids", "resources", "scopes")


def table_rows(path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the span tables, sorted (row ids included)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in TABLES}


def backlog_count(path: str | Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT coalesce(sum(spans), 0) FROM span_backlog").fetchone()[0])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_backlogged_spans_become_the_rows_the_direct_route_writes(
    recorded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Every record kind, stored through the backlog (in rows of a few spans, indexed
    two rows a transaction) and straight: the same rows in every table, row ids
    included, and the same answers to every query."""
    _spans, kept = recorded
    items = [(plain, (resource, scope)) for plain, resource, scope in kept]
    later, direct = str(tmp_path / "later.db"), str(tmp_path / "direct.db")
    monkeypatch.setattr(_backlog, "BACKLOG_MIN_SPANS", 1)
    monkeypatch.setattr(_backlog, "BACKLOG_ROW_SPANS", 3)
    exporter = TraceDBSpanExporter(later)
    try:
        assert exporter.write_records(items)
        assert backlog_count(later) == len(items)
        assert table_rows(later)["spans"] == []
        assert exporter.index_backlog(together=2) is True
        assert backlog_count(later) == 0
    finally:
        exporter.shutdown()
    exporter = TraceDBSpanExporter(direct)
    try:
        assert exporter.write_records(items, later=False)
    finally:
        exporter.shutdown()
    assert table_rows(later) == table_rows(direct)
    assert table_rows(direct)["links"] and table_rows(direct)["span_attrs"]

    def answers(path: str) -> list[Any]:
        with TraceDB(path) as db:
            traces = db.traces()
            return [traces, [db.trace(t.trace_id) for t in traces], db.messages(),
                    [db.state_history(name) for name in db.state_objects()], db.losses()]

    assert answers(later) == answers(direct)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_past_its_cap_the_backlog_takes_no_more_and_batches_become_rows_at_once(
    recorded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """With the backlog at its cap a batch is made into rows at once (the program runs at
    the DB's pace again, and its end has at most the cap to index); once indexing has
    made room, batches go to the backlog again."""
    _spans, kept = recorded
    items = [(plain, (resource, scope)) for plain, resource, scope in kept]
    monkeypatch.setattr(_backlog, "BACKLOG_MIN_SPANS", 1)
    monkeypatch.setattr(_backlog, "BACKLOG_MAX_SPANS", len(items) + 1)
    path = str(tmp_path / "capped.db")
    exporter = TraceDBSpanExporter(path)
    try:
        assert exporter.write_records(items)
        assert backlog_count(path) == len(items) and not table_rows(path)["spans"]
        assert exporter.write_records(items)  # (over the cap: rows now)
        assert backlog_count(path) == len(items)
        assert len(table_rows(path)["spans"]) == len(items)
        assert exporter.index_backlog() is True
        assert exporter.write_records(items)  # (room again)
        assert backlog_count(path) == len(items)
    finally:
        exporter.shutdown()  # (indexes the rest)
    assert backlog_count(path) == 0
    assert len(table_rows(path)["spans"]) == 3 * len(items)


def test_an_unreadable_backlog_row_is_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose body is not one (damaged): indexing goes on past it, the row is
    removed, and its spans are counted lost in this process."""
    from procscope.core import losses

    path = str(tmp_path / "bad.db")
    exporter = TraceDBSpanExporter(path)
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(_schema.SPAN_BACKLOG_INSERT, (1, "x", 7, 0, b"not zlib"))
            conn.commit()
        before = losses.lost_by_reason().get("backlog_unreadable", 0)
        assert exporter.index_backlog() is True
        assert losses.lost_by_reason().get("backlog_unreadable", 0) == before + 7
        assert backlog_count(path) == 0
    finally:
        exporter.shutdown()


def run(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    return subprocess.run([sys.executable, str(program), *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=env)


def read(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


# A burst (30,000 messages through a queue, as fast as the program can), then what the DB
# holds: stored for later at once, made into rows while the program idles. The first half
# is recorded while the recorder's thread is held, so that it meets a full batch however
# loaded the machine is (on a starved program a tick may bring fewer records than a
# burst's); the second half as it comes.
BURST = """
import os, queue, signal, sqlite3, sys, time
import procscope
from procscope._api import current_scope

procscope.setup(db="burst.db")
recorder = current_scope().processors[0]
jobs = procscope.name(queue.Queue(), "jobs")
with recorder._draining:  # (30,000 records: the recorder holds 32,768)
    for i in range(15_000):
        jobs.put(i)
        jobs.get()
for i in range(15_000, 30_000):
    jobs.put(i)
    jobs.get()
if sys.argv[1] == "exit-slow":  # (its end's indexing outlasts the shutdown's budget)
    import procscope._scope
    procscope._scope.SHUTDOWN_SECONDS = 0.5
recorder.force_flush()  # (stored: the backlog is not indexed by a flush of the recorder)
conn = sqlite3.connect("file:burst.db?mode=ro", uri=True)
print(conn.execute("SELECT coalesce(sum(spans), 0) FROM span_backlog").fetchone()[0])
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "idle":
    deadline = time.monotonic() + 60
    while conn.execute("SELECT count(*) FROM span_backlog").fetchone()[0]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    print(conn.execute("SELECT count(*) FROM spans WHERE name = 'get jobs'").fetchone()[0])
"""


@pytest.mark.parametrize("then", ["idle", "exit", "exit-slow"])
def test_a_burst_is_stored_at_once_and_indexed_when_idle_or_at_the_end(
    tmp_path: Path, then: str
) -> None:
    """The burst's spans are in the backlog right after it; an idle program indexes them
    itself, and a program that ends at once indexes them at its end, past the shutdown's
    budget while that makes progress: every message is then read with both ends, and
    nothing says the recording is incomplete."""
    done = run(tmp_path, BURST, then)
    assert done.returncode == 0, done.stderr
    printed = [int(word) for word in done.stdout.split()]
    assert printed[0] >= _backlog.BACKLOG_MIN_SPANS
    if then == "idle":
        assert printed[1] == 30_000
    db = tmp_path / "burst.db"
    assert backlog_count(db) == 0
    listed = read("messages", "--db", str(db), "--queue", "jobs", "--limit", "100000",
                  "--json")
    assert listed.returncode == 0, listed.stderr
    messages = json.loads(listed.stdout)
    assert len(messages) == 30_000 and all(m["sender"] and m["receiver"] for m in messages)
    assert "incomplete" not in listed.stderr


def test_a_backlog_left_by_a_killed_program_is_reported_then_indexed_by_the_next(
    tmp_path: Path,
) -> None:
    """A program killed with its burst in the backlog: read commands say, in their one
    stderr line, how many spans are stored but not indexed, and the run is incomplete;
    the next program writing the DB indexes them at its end, and every message is there."""
    done = run(tmp_path, BURST, "kill")
    assert done.returncode == -9
    waiting = int(done.stdout.split()[0])
    assert waiting >= _backlog.BACKLOG_MIN_SPANS
    db = str(tmp_path / "burst.db")
    traces = read("traces", "--db", db, "--json")
    assert traces.returncode == 0, traces.stderr
    assert f"{waiting:,} spans stored but not yet indexed" in traces.stderr
    assert json.loads(traces.stdout)["recording"]["complete"] is False
    again = run(tmp_path, "import procscope; procscope.setup(db='burst.db'); "
                          "procscope.shutdown()")
    assert again.returncode == 0, again.stderr
    assert backlog_count(db) == 0
    listed = read("messages", "--db", db, "--run", "all", "--queue", "jobs", "--limit",
                  "100000", "--json")
    messages = json.loads(listed.stdout)
    # (the program flushed its recorder before it was killed: every message was stored)
    assert len(messages) == 30_000 and all(m["sender"] and m["receiver"] for m in messages)
    assert "not yet indexed" not in listed.stderr


def test_a_version_4_db_gains_the_backlog_table_when_written(tmp_path: Path) -> None:
    """A DB made before the backlog (schema version 4) is migrated by the next writer."""
    path = str(tmp_path / "old.db")
    TraceDBSpanExporter(path).shutdown()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TABLE span_backlog")
        conn.execute("PRAGMA user_version = 4")
        conn.commit()
    TraceDBSpanExporter(path).shutdown()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _schema.SCHEMA_VERSION == 5
        assert conn.execute("SELECT count(*) FROM span_backlog").fetchone()[0] == 0
