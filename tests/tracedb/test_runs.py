"""Runs in the trace DB: spans kept apart by run id, the runs list, --run's resolution,
and DBs older than runs (schema version 2) read as one run and migrated."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter, UnknownRunError, _schema

from .conftest import build_span

T0 = 1_700_000_000 * 10**9
RUN_A = "aaaa000011112222"
RUN_B = "bbbb000011112222"
RUN_B2 = "bbbb999911112222"  # shares "bbbb" with RUN_B


def _resource(run_id: str, pid: int, command: str | None = None) -> Resource:
    attributes: dict[str, object] = {
        "service.name": "tests",
        "process.pid": pid,
        "procscope.run.id": run_id,
    }
    if command is not None:
        attributes["procscope.run.command"] = command
    return Resource(attributes)


def _trace(resource: Resource, seed: int, start_ns: int, *, error: bool = False) -> list:
    """A root span and one child, from ``resource``'s process."""
    trace_id, root = 0x1000 + seed, 0x2000 + seed
    return [
        build_span(
            f"child {seed}",
            trace_id=trace_id,
            span_id=0x3000 + seed,
            parent_id=root,
            start_ns=start_ns + 10,
            resource=resource,
            error="boom" if error else None,
        ),
        build_span(
            f"job {seed}", trace_id=trace_id, span_id=root, start_ns=start_ns, resource=resource
        ),
    ]


def _export(db: str, *batches: list) -> None:
    exporter = TraceDBSpanExporter(db)
    try:
        for batch in batches:
            exporter.export(batch)
    finally:
        exporter.shutdown()


def test_runs_are_listed_and_kept_apart(db_path: str) -> None:
    """Two runs (one of two processes) in one DB: each listed with its command, span,
    error and process counts; every read method keeps to the run it is given."""
    a_root, a_child = _resource(RUN_A, 100, "python app.py"), _resource(RUN_A, 101)
    b_root = _resource(RUN_B, 200, "python app.py --again")
    _export(
        db_path,
        _trace(a_root, 1, T0) + _trace(a_child, 2, T0 + 10**6, error=True),
        _trace(b_root, 3, T0 + 10**9),
    )
    with TraceDB(db_path) as db:
        runs = db.runs()
        assert [r.run_id for r in runs] == [RUN_A, RUN_B]
        a, b = runs
        assert (a.command, a.root_pid, a.span_count, a.errors) == ("python app.py", 100, 4, 1)
        assert (b.command, b.root_pid, b.span_count, b.errors) == (
            "python app.py --again",
            200,
            2,
            0,
        )
        assert a.start_ns == T0 and a.complete and b.complete
        assert db.latest_run_id() == RUN_B
        assert {t.root_name for t in db.traces(run=RUN_A)} == {"job 1", "job 2"}
        assert {t.root_name for t in db.traces(run=RUN_B)} == {"job 3"}
        assert len(db.traces()) == 3  # run=None: every run
        assert {s.name for s in db.spans(run=RUN_B)} == {"job 3", "child 3"}
        assert db.span_count(run=RUN_A) == 4 and db.span_count() == 6
        trace_a = db.traces(run=RUN_A)[0].trace_id
        assert db.trace(trace_a, run=RUN_B) is None
        assert db.trace(trace_a, run=RUN_A) is not None


def test_a_run_is_named_by_a_unique_start_of_its_id(db_path: str) -> None:
    """A unique prefix names a run; an ambiguous or unknown one raises UnknownRunError
    saying which."""
    _export(
        db_path,
        _trace(_resource(RUN_A, 1, "a"), 1, T0),
        _trace(_resource(RUN_B, 2, "b"), 2, T0 + 10),
        _trace(_resource(RUN_B2, 3, "c"), 3, T0 + 20),
    )
    with TraceDB(db_path) as db:
        assert db.resolve_run("aa") == RUN_A
        assert db.resolve_run("BBBB9") == RUN_B2
        assert [t.root_name for t in db.traces(run="bbbb0")] == ["job 2"]
        with pytest.raises(UnknownRunError, match="ambiguous"):
            db.resolve_run("bbbb")
        with pytest.raises(UnknownRunError, match="no run 'cc'"):
            db.traces(run="cc")


def test_losses_count_against_their_own_run(db_path: str) -> None:
    """A process's losses make its run incomplete, not the other runs (here both runs
    were exported by this process, one after the other: the loss is the second's)."""
    _export(
        db_path,
        _trace(_resource(RUN_A, 100, "a"), 1, T0),
        _trace(_resource(RUN_B, 200, "b"), 2, T0 + 10**9),
    )
    conn = sqlite3.connect(db_path, isolation_level=None)
    loss = (os.getpid(), T0 + 10**9, "queue_full", 7, T0 + 2 * 10**9, "MainProcess")
    conn.execute(_schema.LOSS_UPSERT, loss)
    conn.close()
    with TraceDB(db_path) as db:
        a, b = db.runs()
        assert a.complete and not b.complete and b.lost == 7
        assert db.losses(run=RUN_A) == []
        assert [r.count for r in db.losses(run=RUN_B)] == [7]


def _version_2_db(path: str) -> None:
    """A DB as procscope wrote it before runs (schema version 2): one trace of two spans."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (*_schema.TABLES, *_schema.INDEXES):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {_schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO resources (resource_id, digest, attributes) VALUES "
        '(1, \'d\', \'{"process.pid": 42, "process.command": "python"}\')'
    )
    trace_id = (0x77).to_bytes(16, "big")
    for pk, span_id, parent, name in ((1, 5, None, "old job"), (2, 6, 5, "old step")):
        conn.execute(
            "INSERT INTO spans (span_pk, trace_id, span_id, parent_span_id, name, kind, "
            "start_ns, end_ns, status_code, resource_id, pid) VALUES (?,?,?,?,?,?,?,?,0,1,42)",
            (pk, trace_id, span_id, parent, name, SpanKind.INTERNAL.value, T0, T0 + 100),
        )
    conn.execute(
        "INSERT INTO traces (trace_id, start_ns, end_ns, span_count, error_count, root_name, "
        "root_span_pk) VALUES (?, ?, ?, 2, 0, 'old job', 1)",
        (trace_id, T0, T0 + 100),
    )
    conn.close()


def test_a_version_2_db_reads_as_one_run_then_is_migrated(tmp_path: Path) -> None:
    """A DB older than runs is one run, "unknown", to readers; a writer migrates it to
    version 3, and its old spans stay that run beside the new run."""
    db_path = str(tmp_path / "old.db")
    _version_2_db(db_path)
    with TraceDB(db_path) as db:
        (run,) = db.runs()
        assert (run.run_id, run.span_count, run.processes, run.root_pid) == ("unknown", 2, 1, 42)
        assert db.latest_run_id() == "unknown"
        assert [t.root_name for t in db.traces(run="unknown")] == ["old job"]
        assert len(db.spans(run="unknown")) == 2
    _export(db_path, _trace(_resource(RUN_A, 100, "new"), 1, T0 + 10**9))
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == _schema.SCHEMA_VERSION
    conn.close()
    with TraceDB(db_path) as db:
        assert [r.run_id for r in db.runs()] == ["unknown", RUN_A]
        assert db.latest_run_id() == RUN_A
        assert [t.root_name for t in db.traces(run="unknown")] == ["old job"]
        assert [t.root_name for t in db.traces(run=RUN_A)] == ["job 1"]
        assert {s.name for s in db.spans(run="unknown")} == {"old job", "old step"}


def test_a_run_whose_traces_retention_deleted_is_no_longer_listed(db_path: str) -> None:
    """Pruning by age deletes the old run's traces, and its row with them; the newer run
    stays listed with its counts."""
    from procscope.exporters.tracedb import _retention

    _export(
        db_path,
        _trace(_resource(RUN_A, 1, "old"), 1, T0),
        _trace(_resource(RUN_B, 2, "new"), 2, T0 + 3600 * 10**9),
    )
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        now = T0 + 3601 * 10**9
        assert _retention.prune(conn, max_bytes=None, max_age_s=60, now_ns=now) == 1
    finally:
        conn.close()
    with TraceDB(db_path) as db:
        assert [(r.run_id, r.span_count) for r in db.runs()] == [(RUN_B, 2)]
        assert db.latest_run_id() == RUN_B
