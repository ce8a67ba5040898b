"""Files that must not be written, and an environment that refuses writes: export fails
with one warning, the program carries on, and nothing foreign is ever overwritten."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from procscope.exporters.tracedb import TraceDB, TraceDBError, TraceDBSpanExporter, _schema

FAILURE = SpanExportResult.FAILURE
SUCCESS = SpanExportResult.SUCCESS


def _export_three_times(path, spans, **kwargs):
    exporter = TraceDBSpanExporter(path, **kwargs)
    outcomes = [exporter.export(spans) for _ in range(3)]
    exporter.shutdown()
    return outcomes


def _procscope_db(path, make_traces) -> None:
    exporter = TraceDBSpanExporter(path)
    assert exporter.export(make_traces(2)) is SUCCESS
    exporter.shutdown()


def test_not_a_sqlite_file_is_left_untouched(db_path, make_traces, procscope_warnings):
    """A text file at the DB path: FAILURE, one warning, and the file's bytes unchanged."""
    content = b"my precious notes\n" * 100
    with open(db_path, "wb") as handle:
        handle.write(content)
    assert _export_three_times(db_path, make_traces(2)) == [FAILURE] * 3
    with open(db_path, "rb") as handle:
        assert handle.read() == content
    assert not os.path.exists(db_path + "-wal")
    warnings = procscope_warnings()
    assert len(warnings) == 1
    assert "not a SQLite file" in warnings[0].getMessage()
    with pytest.raises(TraceDBError, match="not a SQLite file"):
        TraceDB(db_path)


def test_foreign_sqlite_file_is_left_untouched(db_path, make_traces, procscope_warnings):
    """Another program's SQLite DB: FAILURE, one warning, its tables, rows and journal mode kept."""
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE accounts (name TEXT, balance INTEGER)")
    conn.execute("INSERT INTO accounts VALUES ('ann', 10)")
    conn.commit()
    conn.close()
    with open(db_path, "rb") as handle:
        before = handle.read()
    assert _export_three_times(db_path, make_traces(2)) == [FAILURE] * 3
    with open(db_path, "rb") as handle:
        assert handle.read() == before
    warnings = procscope_warnings()
    assert len(warnings) == 1
    assert "not a procscope trace DB" in warnings[0].getMessage()
    with pytest.raises(TraceDBError, match="not a procscope trace DB"):
        TraceDB(db_path)


def test_newer_schema_is_refused(db_path, make_traces, procscope_warnings):
    """A DB from a newer procscope is neither written nor read, with a message saying so."""
    _procscope_db(db_path, make_traces)
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {_schema.SCHEMA_VERSION + 1}")
    conn.close()
    assert _export_three_times(db_path, make_traces(2, seed=5)) == [FAILURE] * 3
    assert len(procscope_warnings()) == 1
    assert "newer procscope" in procscope_warnings()[0].getMessage()
    with pytest.raises(TraceDBError, match="newer procscope"):
        TraceDB(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 8
    conn.close()


def test_older_schema_without_migration_is_refused(db_path, make_traces, procscope_warnings):
    """An older procscope DB that no migration covers is refused, not rewritten."""
    _procscope_db(db_path, make_traces)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    assert _export_three_times(db_path, make_traces(2, seed=5)) == [FAILURE] * 3
    assert "cannot migrate" in procscope_warnings()[0].getMessage()
    with pytest.raises(TraceDBError, match="old procscope trace DB"):
        TraceDB(db_path)


def test_older_schema_is_migrated_when_a_migration_exists(db_path, make_traces, monkeypatch):
    """With a migration from the current version registered for a next one, a file of the
    current version is migrated in place (in its write transaction) and keeps its spans."""
    _procscope_db(db_path, make_traces)
    current = _schema.SCHEMA_VERSION

    def add_notes_table(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE notes (text TEXT)")

    monkeypatch.setattr(_schema, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(_schema.MIGRATIONS, current, add_notes_table)
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(make_traces(1, seed=7)) is SUCCESS
    exporter.shutdown()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1
    assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 12
    conn.close()


def test_db_locked_for_long_fails_the_batch_then_recovers(db_path, make_traces, procscope_warnings):
    """A lock held past the timeout: FAILURE and one warning; afterwards it writes."""
    _procscope_db(db_path, make_traces)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    exporter = TraceDBSpanExporter(db_path, timeout=0.2)
    assert [exporter.export(make_traces(1, seed=s)) for s in (10, 11)] == [FAILURE, FAILURE]
    warnings = procscope_warnings()
    assert len(warnings) == 1 and "locked" in warnings[0].getMessage()
    holder.execute("ROLLBACK")
    holder.close()
    assert exporter.export(make_traces(1, seed=12)) is SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        assert db.span_count() == 12


def test_full_disk_by_max_page_count(db_path, make_traces, procscope_warnings):
    """SQLITE_FULL (via PRAGMA max_page_count on the exporter's own connection): FAILURE,
    one warning, earlier batches intact, the program carries on."""
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(make_traces(5, seed=1)) is SUCCESS
    conn = exporter._writer.conn  # the real connection: SQLite enforces the cap itself
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = make_traces(2000, seed=2)
    assert [exporter.export(big) for _ in range(3)] == [FAILURE] * 3
    warnings = procscope_warnings()
    assert len(warnings) == 1 and "full" in warnings[0].getMessage()
    exporter.shutdown()
    with TraceDB(db_path) as db:
        assert db.span_count() == 20
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_full_disk_on_a_real_small_filesystem(tmpfs, make_traces, procscope_warnings):
    """A 256 KiB tmpfs fills up: FAILURE with one warning, then the committed spans read back."""
    path = os.path.join(tmpfs("256k"), "trace.db")
    exporter = TraceDBSpanExporter(path)
    assert exporter.export(make_traces(10, seed=1)) is SUCCESS
    outcomes = [exporter.export(make_traces(300, seed=s)) for s in range(2, 12)]
    assert FAILURE in outcomes
    assert len(procscope_warnings()) == 1
    exporter.shutdown()
    with TraceDB(path) as db:
        assert db.span_count() == 40 + 1200 * outcomes.count(SUCCESS)


def test_read_only_filesystem(tmpfs, make_traces, procscope_warnings):
    """A DB on a file system remounted read-only (root ignores chmod, not a read-only mount):
    export fails with one warning, and the CLI's reader still reads it."""
    folder = tmpfs("4m")
    path = os.path.join(folder, "trace.db")
    _procscope_db(path, make_traces)
    done = subprocess.run(["mount", "-o", "remount,ro", folder], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert _export_three_times(path, make_traces(1, seed=3)) == [FAILURE] * 3
    warnings = procscope_warnings()
    assert len(warnings) == 1 and "read-only file system" in warnings[0].getMessage()
    with TraceDB(path) as db:
        assert db.span_count() == 8


def test_missing_folder_and_directory_paths(tmp_path, make_traces, procscope_warnings):
    """A path in a missing folder, or a directory: FAILURE with a warning each, nothing raised."""
    missing = str(tmp_path / "nope" / "trace.db")
    assert _export_three_times(missing, make_traces(1)) == [FAILURE] * 3
    assert _export_three_times(str(tmp_path), make_traces(1)) == [FAILURE] * 3
    messages = [w.getMessage() for w in procscope_warnings()]
    assert len(messages) == 2
    assert "does not exist" in messages[0] and "directory" in messages[1]
