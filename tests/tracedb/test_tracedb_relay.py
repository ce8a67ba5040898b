"""Children hand their batches to the DB's owner process; every way that can fail falls
back to the child writing itself, and nothing foreign is ever written."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sqlite3
import time
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB, TraceDBError, TraceDBSpanExporter, _relay

pytestmark = pytest.mark.skipif(not _relay.relay_wanted(), reason="the relay is Linux-only")


def _rows(path: str) -> list[tuple[Any, ...]]:
    """Everything a reader sees of the spans, minus row ids and the exporting pid."""
    conn = sqlite3.connect(path)
    try:
        spans = conn.execute(
            "SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, "
            "s.end_ns, s.status_code, s.status_description, s.attributes, r.attributes, "
            "c.name, c.version FROM spans s JOIN resources r USING (resource_id) "
            "JOIN scopes c USING (scope_id) ORDER BY s.span_id"
        ).fetchall()
        events = conn.execute(
            "SELECT s.span_id, e.name, e.time_ns, e.attributes FROM events e "
            "JOIN spans s USING (span_pk) ORDER BY s.span_id, e.time_ns"
        ).fetchall()
        links = conn.execute(
            "SELECT s.span_id, l.trace_id, l.span_id, l.attributes FROM links l "
            "JOIN spans s USING (span_pk) ORDER BY s.span_id"
        ).fetchall()
        index = conn.execute(
            "SELECT a.key, a.value, s.span_id FROM span_attrs a JOIN spans s USING (span_pk) "
            "ORDER BY 3, 1"
        ).fetchall()
        traces = conn.execute("SELECT * FROM traces ORDER BY trace_id").fetchall()
    finally:
        conn.close()
    return [spans, events, links, index, traces]  # type: ignore[list-item]


def _export_in_fork_child(exporter: TraceDBSpanExporter, spans: list[Any]) -> dict[str, Any]:
    """Export ``spans`` from a forked child of this process; what the child saw."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.SimpleQueue()

    def child() -> None:
        outcome = exporter.export(spans)
        results.put(
            {
                "outcome": outcome.name,
                "opened_db": exporter._writer is not None,
                "pid": os.getpid(),
            }
        )

    process = ctx.Process(target=child)
    process.start()
    seen: dict[str, Any] = results.get()
    process.join(30)
    assert process.exitcode == 0
    return seen


def _wait_for_spans(path: str, count: int) -> None:
    """Wait until ``count`` spans are readable; the relay thread may still be creating the DB."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with TraceDB(path) as db:
                if db.span_count() >= count:
                    return
        except TraceDBError:
            pass  # not created yet, or its schema is being written right now
        time.sleep(0.02)


def test_a_fork_child_hands_its_batch_to_the_owner_which_writes_it_exactly(
    tmp_path: Any, make_span: Any
) -> None:
    """The child never opens the DB; the rows are the same as if it had written them."""
    spans = [
        make_span(
            "handled",
            trace_id=7,
            span_id=11,
            attributes={"order": 3, "msg": "ünïcode", "ratio": 0.5, "ok": True, "tags": ("a", "b")},
            events=[("state.change", 1_700_000_000_000_000_500, {"field": "total"})],
            links=[(9, 13, {"messaging.message.id": "m-1"})],
            error="boom",
        ),
        make_span("child", trace_id=7, span_id=12, parent_id=11),
    ]
    relayed_path, direct_path = str(tmp_path / "relayed.db"), str(tmp_path / "direct.db")
    owner = TraceDBSpanExporter(relayed_path)
    owner.export([make_span("opened", trace_id=1, span_id=1)])  # the owner has the DB open
    seen = _export_in_fork_child(owner, spans)
    assert seen == {"outcome": "SUCCESS", "opened_db": False, "pid": seen["pid"]}
    owner.shutdown()  # writes whatever the relay still holds

    direct = TraceDBSpanExporter(direct_path)  # the owner of its DB: writes itself
    direct.export([make_span("opened", trace_id=1, span_id=1)])
    direct.export(spans)
    direct.shutdown()
    assert _rows(relayed_path) == _rows(direct_path)
    with TraceDB(relayed_path) as db:
        pids = {s.name: s.pid for s in db.spans()}
    assert pids["handled"] == seen["pid"] != os.getpid()


def test_after_the_owner_shut_down_a_child_writes_for_itself(db_path: str, make_span: Any) -> None:
    """Sends fail once the owner stops reading; the child's batch is still written."""
    owner = TraceDBSpanExporter(db_path)
    owner.export([make_span("opened", trace_id=1, span_id=1)])
    relay = owner._relay
    assert relay is not None
    relay.close()  # the owner's relay is gone, the owner itself not yet
    seen = _export_in_fork_child(owner, [make_span("late", trace_id=2, span_id=2)])
    assert seen["outcome"] == "SUCCESS" and seen["opened_db"] is True
    owner.shutdown()
    with TraceDB(db_path) as db:
        assert sorted(s.name for s in db.spans()) == ["late", "opened"]


def test_a_batch_too_big_for_one_datagram_is_written_by_the_child(
    db_path: str, make_span: Any
) -> None:
    """Over the datagram limit, the child writes that batch itself, losing nothing."""
    owner = TraceDBSpanExporter(db_path)
    big = [
        make_span(f"big {i}", trace_id=3, span_id=i + 1, attributes={"pad": "x" * 4000})
        for i in range(80)
    ]
    seen = _export_in_fork_child(owner, big)
    assert seen["outcome"] == "SUCCESS" and seen["opened_db"] is True
    owner.shutdown()
    with TraceDB(db_path) as db:
        assert db.span_count() == 80


def test_spawned_children_find_the_owner_through_the_environment(
    db_path: str, make_span: Any
) -> None:
    """A fresh interpreter (spawn) with an exporter for the same DB relays to the owner."""
    owner = TraceDBSpanExporter(db_path)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.SimpleQueue()
    process = ctx.Process(target=_spawned_child, args=(db_path, results))
    process.start()
    seen = results.get()
    process.join(60)
    assert seen == {"outcome": "SUCCESS", "opened_db": False}
    _wait_for_spans(db_path, 1)
    owner.shutdown()
    with TraceDB(db_path) as db:
        assert [s.name for s in db.spans()] == ["from spawn"]


def _spawned_child(path: str, results: Any) -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags

    exporter = TraceDBSpanExporter(path)
    span = ReadableSpan(
        name="from spawn",
        context=SpanContext(5, 5, is_remote=False, trace_flags=TraceFlags(1)),
        start_time=1,
        end_time=2,
    )
    outcome = exporter.export([span])
    results.put({"outcome": outcome.name, "opened_db": exporter._writer is not None})
    exporter.shutdown()


def test_foreign_datagrams_are_never_written_and_the_relay_keeps_working(
    db_path: str, make_span: Any
) -> None:
    """Garbage, another DB's batch and an unknown version are dropped; a real batch lands."""
    owner = TraceDBSpanExporter(db_path)
    relay = owner._relay
    assert relay is not None
    other = _relay.LocalIds()
    from procscope.exporters.tracedb._convert import spans_to_batch

    batch = spans_to_batch([make_span("other db", trace_id=4, span_id=4)], other, 1, "x")  # type: ignore[arg-type]
    foreign = json.loads(_relay.encode("/elsewhere.db", batch, other))
    future = dict(foreign, path=db_path, v=99)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for payload in (b"\x00garbage", json.dumps(foreign).encode(), json.dumps(future).encode()):
            sock.sendto(payload, relay.address)
    seen = _export_in_fork_child(owner, [make_span("real", trace_id=6, span_id=6)])
    assert seen["opened_db"] is False
    owner.shutdown()
    with TraceDB(db_path) as db:
        assert [s.name for s in db.spans()] == ["real"]


def test_relay_can_be_switched_off(db_path: str, make_span: Any, monkeypatch: Any) -> None:
    """PROCSCOPE_DB_RELAY=0: no relay; every process writes for itself."""
    monkeypatch.setenv(_relay.ENV_RELAY, "0")
    owner = TraceDBSpanExporter(db_path)
    assert owner._relay is None
    seen = _export_in_fork_child(owner, [make_span("own", trace_id=8, span_id=8)])
    assert seen["outcome"] == "SUCCESS" and seen["opened_db"] is True
    owner.shutdown()
