"""The exporter writes every field of real spans, from the SDK and from forked children."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import sqlite3
import stat
import sys
import warnings

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter


def test_round_trip_of_every_span_field(db_path, make_span):
    """Ids, kind, times, status, attributes, events, links, scope and exporting process survive."""
    tid = 0xABCDEF0123456789ABCDEF0123456789
    spans = [
        make_span(
            "root",
            trace_id=tid,
            span_id=0xFFFFFFFFFFFFFFFE,
            start_ns=10**18,
            duration_ns=5000,
            attributes={"a": 1, "b": "x", "seq": (1, 2)},
            kind=SpanKind.PRODUCER,
        ),
        make_span(
            "child",
            trace_id=tid,
            span_id=2,
            parent_id=0xFFFFFFFFFFFFFFFE,
            start_ns=10**18 + 10,
            duration_ns=100,
            error="boom",
            events=[("exception", 10**18 + 50, {"exception.type": "ValueError"})],
            links=[(7, 8, {"why": "consumed"})],
        ),
    ]
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        tree = db.trace(format(tid, "032x"))
        assert tree is not None
        assert tree.summary.root_name == "root" and tree.summary.span_count == 2
        assert tree.summary.error_count == 1
        assert tree.summary.start_ns == 10**18 and tree.summary.end_ns == 10**18 + 5000
        root = tree.roots[0].span
        child = tree.roots[0].children[0].span
        assert root.span_id == "fffffffffffffffe" and root.parent_span_id is None
        assert root.kind == "PRODUCER" and root.attributes == {"a": 1, "b": "x", "seq": [1, 2]}
        assert child.parent_span_id == "fffffffffffffffe"
        assert child.status_code == "ERROR" and child.status_description == "boom"
        assert [(e.name, e.time_ns, e.attributes) for e in child.events] == [
            ("exception", 10**18 + 50, {"exception.type": "ValueError"})
        ]
        assert [(link.trace_id, link.span_id, link.attributes) for link in child.links] == [
            (format(7, "032x"), format(8, "016x"), {"why": "consumed"})
        ]
        assert (child.scope_name, child.scope_version) == ("tests.tracedb", "1.2.3")
        assert child.pid == os.getpid() and child.process_name == "MainProcess"
        assert db.resource(child.resource_id)["service.name"] == "tracedb-tests"


def test_resource_is_stored_once(db_path, make_traces):
    """1000 spans of one resource, from two exporters, make one resource row."""
    spans = make_traces(250)
    for part in (spans[:500], spans[500:]):
        exporter = TraceDBSpanExporter(db_path)
        assert exporter.export(part[:300]) is SpanExportResult.SUCCESS
        assert exporter.export(part[300:]) is SpanExportResult.SUCCESS
        exporter.shutdown()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM resources").fetchone()[0] == 1
    assert conn.execute("SELECT count(DISTINCT resource_id) FROM spans").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 1000
    conn.close()


def test_sdk_batch_processor_pipeline(db_path):
    """Spans made with the SDK and a BatchSpanProcessor are all in the DB after shutdown."""
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(TraceDBSpanExporter(db_path), max_export_batch_size=64)
    )
    tracer = provider.get_tracer("t")
    for i in range(300):
        with tracer.start_as_current_span(f"op {i}", kind=SpanKind.CONSUMER) as span:
            with tracer.start_as_current_span("inner") as inner:
                inner.add_event("tick", {"i": i})
                if i % 100 == 0:
                    inner.set_status(Status(StatusCode.ERROR, "every 100th"))
            span.set_attribute("i", i)
    provider.shutdown()
    with TraceDB(db_path) as db:
        assert db.span_count() == 600
        assert len(db.traces(limit=None)) == 300
        assert len(db.traces(errors_only=True, limit=None)) == 3
        inner = db.spans(name="inner", limit=1)[0]
        assert inner.events[0].name == "tick"


def _child_makes_spans(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("child")
    multiprocessing.current_process().name = "worker-one"
    with tracer.start_as_current_span("in child"):
        pass
    provider.force_flush()


def test_forked_child_writes_with_its_own_pid_and_name(db_path):
    """A forked child exports through its own connection, under its own pid and name."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(TraceDBSpanExporter(db_path)))
    tracer = provider.get_tracer("parent")
    with tracer.start_as_current_span("before fork"):
        pass
    provider.force_flush()  # the parent's connection is open now
    child = multiprocessing.get_context("fork").Process(target=_child_makes_spans, args=(provider,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with tracer.start_as_current_span("after fork"):
        pass
    provider.shutdown()
    with TraceDB(db_path) as db:
        by_name = {s.name: s for s in db.spans()}
    assert set(by_name) == {"before fork", "in child", "after fork"}
    assert by_name["in child"].pid == child.pid
    assert by_name["in child"].process_name == "worker-one"
    assert by_name["after fork"].pid == os.getpid()


def test_file_is_created_owner_only(db_path, make_traces):
    """The DB file (and its WAL companions) is created with mode 0600."""
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(make_traces(2)) is SpanExportResult.SUCCESS
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            assert stat.S_IMODE(os.stat(db_path + suffix).st_mode) == 0o600, suffix
    exporter.shutdown()


def test_default_path_comes_from_env_then_cwd(tmp_path, monkeypatch, make_traces):
    """PROCSCOPE_DB names the file; without it ./procscope.db is used, made absolute."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROCSCOPE_DB", "from-env.db")
    assert TraceDBSpanExporter().path == str(tmp_path / "from-env.db")
    monkeypatch.delenv("PROCSCOPE_DB")
    exporter = TraceDBSpanExporter()
    assert exporter.path == str(tmp_path / "procscope.db")
    assert exporter.export(make_traces(1)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert (tmp_path / "procscope.db").exists()


def test_indexed_attributes_fill_side_tables(db_path, make_span):
    """Indexed span and event attribute keys get (key, value) rows; other keys do not."""
    spans = [
        make_span(
            "send",
            trace_id=5,
            span_id=1,
            attributes={"messaging.message.id": "m-1", "process.pid": 42, "other": "no"},
            events=[("state", 10**18, {"procscope.state.object": "cart", "x": 1})],
        ),
    ]
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    conn = sqlite3.connect(db_path)
    assert sorted(conn.execute("SELECT key, value FROM span_attrs")) == [
        ("messaging.message.id", "m-1"),
        ("process.pid", 42),
    ]
    assert list(conn.execute("SELECT key, value FROM event_attrs")) == [
        ("procscope.state.object", "cart")
    ]
    indexed = json.loads(
        conn.execute("SELECT value FROM meta WHERE key = 'indexed_span_attributes'").fetchone()[0]
    )
    assert "messaging.destination.name" in indexed
    conn.close()


def test_odd_attribute_values_are_stored_as_valid_json(db_path, make_span):
    """NaN, infinities, booleans and sequences are stored; SQLite's JSON functions read them."""
    span = make_span(
        "odd", trace_id=9, span_id=9,
        attributes={"nan": float("nan"), "inf": float("-inf"), "flag": True, "seq": ("a", "b")},
    )  # fmt: skip
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        stored = db.spans()[0].attributes
        assert stored == {"nan": "nan", "inf": "-inf", "flag": True, "seq": ["a", "b"]}
        assert db.spans(attributes={"flag": True})[0].name == "odd"


class _RenamingSpan(ReadableSpan):
    """A ReadableSpan whose properties differ from its private fields."""

    @property
    def name(self) -> str:
        return "renamed " + self._name


def test_span_subclass_is_read_through_its_properties(db_path, make_span):
    """A ReadableSpan subclass overriding a property is exported as its properties say."""
    base = make_span("original", trace_id=4, span_id=4, attributes={"k": 1})
    span = _RenamingSpan(
        name=base.name, context=base.context, resource=base.resource, attributes={"k": 1},
        start_time=base.start_time, end_time=base.end_time,
    )  # fmt: skip
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        assert [s.name for s in db.spans()] == ["renamed original"]


def test_export_reentered_from_the_exporting_thread_does_not_hang(db_path, make_span):
    """An export re-entered from inside an export on the same thread (as a signal handler
    flushing at SIGTERM would) fails at once instead of deadlocking; the outer one succeeds."""
    exporter = TraceDBSpanExporter(db_path)
    inner_results = []

    class CallsBack:
        def __str__(self) -> str:  # JSON encoding of an odd value calls str() mid-export
            inner_results.append(exporter.export([make_span("inner", trace_id=2, span_id=2)]))
            return "called back"

    outer = make_span("outer", trace_id=1, span_id=1)
    outer._attributes = {"odd": CallsBack()}
    assert exporter.export([outer]) is SpanExportResult.SUCCESS
    assert inner_results == [SpanExportResult.FAILURE]
    exporter.shutdown()
    with TraceDB(db_path) as db:
        assert [(s.name, s.attributes) for s in db.spans()] == [("outer", {"odd": "called back"})]


def test_deleted_db_file_is_recreated(db_path, make_traces):
    """Deleting the DB while the exporter runs: the next batch goes to a new file, not a ghost."""
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(make_traces(2, seed=1)) is SpanExportResult.SUCCESS
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    assert exporter.export(make_traces(3, seed=2)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        assert db.span_count() == 12
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600


def test_an_exporter_dropped_without_shutdown_closes_its_db_as_shutdown_would(db_path, make_traces):
    """An exporter collected without shutdown() (a program or a test that forgets it) closes
    its connection itself: the file is left in rollback-journal mode, as shutdown() leaves
    it, and no 'unclosed database' ResourceWarning (Python 3.13) comes out of a later
    garbage collection, in whatever code happens to run then."""
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(make_traces(2)) is SpanExportResult.SUCCESS
    unraisable: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda report: unraisable.append(f"{report.exc_type.__name__}: "
                                                          f"{report.exc_value}")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            del exporter
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []
    with open(db_path, "rb") as handle:
        journal_format = handle.read(20)[18]
    assert journal_format == 1  # rollback journal (2: WAL, a connection never closed by us)


def test_setup_does_not_wait_on_a_db_another_process_holds_locked(db_path, make_span,
                                                                 monkeypatch):
    """The DB owner opens the DB at set-up; when another connection holds its write lock,
    set-up goes on at once (not after the 60 s busy timeout), and the first export after
    the lock is freed stores the spans."""
    import threading

    from procscope.exporters.tracedb._writer import Writer

    Writer(db_path).close()
    monkeypatch.setenv("PROCSCOPE_DB_TIMEOUT", "60")
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    made = []
    setup = threading.Thread(target=lambda: made.append(TraceDBSpanExporter(db_path)))
    setup.start()
    setup.join(10)  # a hang detector: set-up must not wait out the 60 s busy timeout
    waited = setup.is_alive()
    blocker.execute("ROLLBACK")
    blocker.close()
    setup.join()
    assert not waited, "set-up waited on the locked DB"
    exporter = made[0]
    assert exporter.export([make_span("after", trace_id=9, span_id=1)]) == SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        assert [s.name for s in db.spans()] == ["after"]


def test_spans_of_alternating_scopes_and_resources_keep_their_own(db_path):
    """A batch whose spans alternate between scopes and resources (messaging, state and
    lifecycle spans in one batch; a parent's and a child's resource) stores each span
    with its own scope and resource, in that batch and in the next."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

    class Collect(SpanProcessor):
        def __init__(self):
            self.spans = []

        def on_end(self, span):
            self.spans.append(span)

    collect = Collect()
    tracers = []
    for service in ("parent", "child"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(collect)
        tracers += [(service, scope, provider.get_tracer(scope)) for scope in ("msg", "state")]
    expected = {}
    for n in range(40):
        service, scope, tracer = tracers[n % 4 if n % 3 else (n // 3) % 4]
        with tracer.start_as_current_span(f"s{n}"):
            pass
        expected[f"s{n}"] = (service, scope)
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(collect.spans[:25]) is SpanExportResult.SUCCESS
    assert exporter.export(collect.spans[25:]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        stored = {
            span.name: (db.resource(span.resource_id)["service.name"], span.scope_name)
            for span in db.spans(limit=100)
        }
    assert stored == expected
