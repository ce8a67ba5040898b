"""TraceDB queries: traces with each filter, one trace as a tree, spans, events_around."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from procscope.exporters.tracedb import TraceDB, TraceDBError, TraceDBSpanExporter

T0 = 1_700_000_000 * 10**9
MS = 1_000_000


@pytest.fixture
def sample_db(db_path, make_span):
    """Three traces: a fast ok one, a slow one with an error, one with a messaging span."""
    spans = [
        make_span("fast", trace_id=1, span_id=11, start_ns=T0, duration_ns=1 * MS),
        make_span("slow", trace_id=2, span_id=21, start_ns=T0 + 10 * MS, duration_ns=500 * MS),
        make_span(
            "fails",
            trace_id=2,
            span_id=22,
            parent_id=21,
            start_ns=T0 + 20 * MS,
            duration_ns=5 * MS,
            error="ValueError: no",
            events=[("exception", T0 + 24 * MS, {"exception.type": "ValueError"})],
        ),
        make_span(
            "orphan",
            trace_id=2,
            span_id=23,
            parent_id=99,
            start_ns=T0 + 30 * MS,
            duration_ns=1 * MS,
        ),
        make_span(
            "send",
            trace_id=3,
            span_id=31,
            start_ns=T0 + 1000 * MS,
            duration_ns=2 * MS,
            attributes={"messaging.destination.name": "jobs", "custom.key": "v"},
        ),
    ]
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(db_path) as db:
        yield db


def _ids(summaries):
    return [int(s.trace_id, 16) for s in summaries]


def test_traces_newest_first_with_summary(sample_db):
    """traces() lists every trace newest first with root name, extent, counts and error flag."""
    listed = sample_db.traces()
    assert _ids(listed) == [3, 2, 1]
    slow = listed[1]
    assert (slow.root_name, slow.span_count, slow.error_count) == ("slow", 3, 1)
    assert slow.duration_ns == 500 * MS and slow.has_error


def test_traces_filters(sample_db):
    """Time range, root name (exact and glob), errors only, minimum duration, attribute, limit."""
    assert _ids(sample_db.traces(start_ns=T0 + 5 * MS, end_ns=T0 + 900 * MS)) == [2]
    assert _ids(sample_db.traces(name="fast")) == [1]
    assert _ids(sample_db.traces(name="s*")) == [3, 2]
    assert _ids(sample_db.traces(errors_only=True)) == [2]
    assert _ids(sample_db.traces(min_duration_ns=2 * MS)) == [3, 2]
    assert _ids(sample_db.traces(attributes={"messaging.destination.name": "jobs"})) == [3]
    assert _ids(sample_db.traces(attributes={"custom.key": "v"})) == [3]
    assert _ids(sample_db.traces(attributes={"custom.key": "w"})) == []
    assert _ids(sample_db.traces(limit=1)) == [3]
    assert _ids(sample_db.traces(limit=1, offset=1)) == [2]


def test_trace_tree_with_orphans_as_roots(sample_db):
    """trace() nests children under parents; a span whose parent is missing is a root."""
    tree = sample_db.trace(format(2, "032x"))
    assert tree is not None
    assert [node.span.name for node in tree.roots] == ["slow", "orphan"]
    fails = tree.roots[0].children[0].span
    assert fails.name == "fails" and fails.is_error
    assert fails.events[0].attributes == {"exception.type": "ValueError"}
    assert sample_db.trace(format(77, "032x")) is None
    with pytest.raises(ValueError):
        sample_db.trace("not-an-id")


def test_spans_filters(sample_db):
    """spans() filters by trace, name, time, pid, attributes (indexed or not) and errors."""
    assert [s.name for s in sample_db.spans(trace_id=format(2, "032x"))] == [
        "slow",
        "fails",
        "orphan",
    ]
    assert [s.name for s in sample_db.spans(name="f*")] == ["fast", "fails"]
    assert [s.name for s in sample_db.spans(start_ns=T0 + 15 * MS, end_ns=T0 + 31 * MS)] == [
        "fails",
        "orphan",
    ]
    assert [s.name for s in sample_db.spans(errors_only=True)] == ["fails"]
    assert [s.name for s in sample_db.spans(attributes={"messaging.destination.name": "jobs"})] == [
        "send"
    ]
    assert [s.name for s in sample_db.spans(attributes={"custom.key": "v"})] == ["send"]
    assert len(sample_db.spans(limit=2)) == 2
    pid = sample_db.spans(limit=1)[0].pid
    assert len(sample_db.spans(pid=pid)) == 5 and sample_db.spans(pid=pid + 1) == []


def test_events_around_an_instant(sample_db):
    """events_around() gives starts, ends and events near a time, across spans, in order."""
    found = sample_db.events_around(T0 + 24 * MS, window_ns=5 * MS)
    assert [(h.what, h.name) for h in found] == [
        ("span_start", "fails"),
        ("event", "exception"),
        ("span_end", "fails"),
    ]
    assert found[1].attributes == {"exception.type": "ValueError"}
    assert sample_db.events_around(T0 + 5000 * MS, window_ns=MS) == []


def test_find_trace_ids_by_prefix(sample_db):
    """A unique hex prefix finds its trace; a shared prefix finds several; junk finds none."""
    assert sample_db.find_trace_ids("0" * 31 + "3") == [format(3, "032x")]
    assert len(sample_db.find_trace_ids("0000")) == 2
    assert sample_db.find_trace_ids("xyz") == []


def test_instrumentor_queries_are_empty_without_their_spans(sample_db):
    """processes/messages/state give empty results, not errors, on a DB without such spans."""
    assert sample_db.processes() == []
    assert sample_db.messages() == []
    assert sample_db.state_history("nothing") == []
    assert sample_db.state_at("nothing", T0) is None


def test_reader_never_creates_a_file(tmp_path):
    """Opening a missing path raises TraceDBError and creates nothing."""
    missing = tmp_path / "absent.db"
    with pytest.raises(TraceDBError, match="no such file"):
        TraceDB(missing)
    assert list(tmp_path.iterdir()) == []


def test_broad_and_selective_attribute_filters_agree(db_path, make_span, monkeypatch):
    """An indexed filter gives the same traces and spans whether planned as broad or selective."""
    spans = [
        make_span(f"s{i}", trace_id=100 + i // 2, span_id=i + 1, start_ns=T0 + i * MS,
                  attributes={"process.pid": 7 if i % 3 else 8})
        for i in range(60)
    ]  # fmt: skip
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    from procscope.exporters.tracedb import _query

    with TraceDB(db_path) as db:
        selective = (
            _ids(db.traces(attributes={"process.pid": 8}, limit=None)),
            [s.name for s in db.spans(attributes={"process.pid": 8})],
        )
        monkeypatch.setattr(_query, "BROAD_MATCHES", 3)
        broad = (
            _ids(db.traces(attributes={"process.pid": 8}, limit=None)),
            [s.name for s in db.spans(attributes={"process.pid": 8})],
        )
    assert selective == broad
    assert broad[1] == [f"s{i}" for i in range(0, 60, 3)]
