"""Retention: the DB stays bounded in age and size, pruning whole traces oldest first."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from procscope.core.settings import SettingWarning
from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter

SUCCESS = SpanExportResult.SUCCESS


def test_max_age_prunes_old_traces_whole(db_path, make_traces):
    """Traces that ended before now - max_age go, with every span; recent ones stay whole."""
    now = time.time_ns()
    old = make_traces(20, 5, seed=1, start_ns=now - 3600 * 10**9, name="old")
    recent = make_traces(10, 5, seed=2, start_ns=now - 10**9, name="recent")
    for number, span in enumerate(old + recent):  # indexed: side-table rows to prune too
        span._attributes = {"process.pid": number}
    exporter = TraceDBSpanExporter(db_path, max_age=600)
    assert exporter.export(old + recent) is SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        names = {t.root_name.split()[0] for t in db.traces(limit=None)}
        kept_pids = sorted(s.attributes["process.pid"] for s in db.spans())
        assert names == {"recent"}
        assert db.span_count() == 50
        assert len(db.spans()) == 50
        left = db.conn.execute("SELECT value FROM span_attrs ORDER BY value").fetchall()
    conn = sqlite3.connect(db_path)
    orphans = conn.execute(
        "SELECT count(*) FROM events WHERE span_pk NOT IN (SELECT span_pk FROM spans)"
    ).fetchone()[0]
    conn.close()
    assert orphans == 0
    assert [row[0] for row in left] == kept_pids == list(range(100, 150))


def test_max_bytes_keeps_the_file_bounded_oldest_first(db_path, make_traces):
    """Writing ~10x max_bytes keeps the file near the limit; the newest traces survive."""
    limit = 400_000
    exporter = TraceDBSpanExporter(db_path, max_bytes=limit)
    base = time.time_ns()
    for batch in range(20):
        spans = make_traces(100, 5, seed=batch, start_ns=base + batch * 10**9, name=f"b{batch}")
        for span in spans:
            span._attributes = {"payload": "y" * 300, "batch": batch}
        exporter._writer_here().retention_interval_s = 0  # check after every batch
        assert exporter.export(spans) is SUCCESS
        # The DB and its WAL stay near the limit all along, not only after a clean close.
        on_disk = os.path.getsize(db_path) + os.path.getsize(db_path + "-wal")
        assert on_disk <= limit * 2.5, (batch, on_disk)
    exporter.shutdown()
    assert os.path.getsize(db_path) <= limit
    with TraceDB(db_path) as db:
        traces = db.traces(limit=None)
        batches = sorted({int(t.root_name.split()[0][1:]) for t in traces})
        # Oldest first: what is left is a run of the newest batches, ending with the last.
        assert batches[-1] == 19 and batches == list(range(batches[0], 20))
        assert batches[0] > 0
        # Whole traces only: every remaining trace still has its 5 spans.
        assert all(t.span_count == 5 for t in traces)
        assert db.span_count() == len(db.spans())


def test_retention_settings_from_environment(monkeypatch, db_path):
    """PROCSCOPE_DB_MAX_BYTES and PROCSCOPE_DB_MAX_AGE set the limits; keywords win."""
    monkeypatch.setenv("PROCSCOPE_DB_MAX_BYTES", "1e6")
    monkeypatch.setenv("PROCSCOPE_DB_MAX_AGE", "3600")
    exporter = TraceDBSpanExporter(db_path)
    assert (exporter.max_bytes, exporter.max_age) == (1_000_000, 3600.0)
    exporter = TraceDBSpanExporter(db_path, max_bytes=5000, max_age=1.5)
    assert (exporter.max_bytes, exporter.max_age) == (5000, 1.5)


def test_bad_retention_setting_warns_and_keeps_no_limit(monkeypatch, db_path):
    """A bad value gives one SettingWarning naming it, and no limit is applied."""
    monkeypatch.setenv("PROCSCOPE_DB_MAX_AGE", "forever")
    with pytest.warns(SettingWarning, match="PROCSCOPE_DB_MAX_AGE.*'forever'"):
        exporter = TraceDBSpanExporter(db_path)
    assert exporter.max_age is None
    monkeypatch.delenv("PROCSCOPE_DB_MAX_AGE")
    with pytest.warns(SettingWarning, match="max_bytes.*-5"):
        exporter = TraceDBSpanExporter(db_path, max_bytes=-5)
    assert exporter.max_bytes is None


def test_failed_prune_does_not_fail_the_committed_batch(db_path, make_traces, procscope_warnings):
    """A prune that cannot get the lock warns once; the batch it followed still succeeded."""
    exporter = TraceDBSpanExporter(db_path, max_age=1, timeout=0.2)
    writer = exporter._writer_here()
    writer.retention_interval_s = 0
    holder = sqlite3.connect(db_path, isolation_level=None)
    now = time.time_ns()
    # Prune runs after the batch's commit; hold the lock from the moment the batch is in.
    original = writer.enforce_retention

    def locked_prune() -> int:
        holder.execute("BEGIN IMMEDIATE")
        try:
            return original()
        finally:
            holder.execute("ROLLBACK")

    writer.enforce_retention = locked_prune
    assert exporter.export(make_traces(2, start_ns=now - 3600 * 10**9)) is SUCCESS
    messages = [w.getMessage() for w in procscope_warnings()]
    assert len(messages) == 1 and "pruning" in messages[0]
    writer.enforce_retention = original
    assert exporter.export(make_traces(1, seed=3, start_ns=now)) is SUCCESS
    exporter.shutdown()
    holder.close()
    with TraceDB(db_path) as db:
        assert db.span_count() == 4  # the old traces went at the next prune
