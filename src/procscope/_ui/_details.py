"""The viewer's answers about one thing: a span's details, the state of every traced
object at the time cursor, and a search by name."""

from __future__ import annotations

import json
from typing import Any

from procscope.exporters.tracedb import _query, _state

from ._window import Scope, in_flight

MAX_OBJECTS = 200  # objects shown at the cursor (the page lists them all, by name)
MAX_FOUND = 50


def span(db: Any, scope: Scope, span_pk: int) -> dict[str, Any] | None:
    """Everything recorded on one span, with its events (an exception's stack among
    their attributes) and links; ``lane`` is where the page draws it."""
    found = _query.fetch_spans(db.conn, "s.span_pk = ?", [span_pk])
    if not found:
        return None
    record = found[0]
    parent = int(record.parent_span_id, 16) if record.parent_span_id else None
    if parent is not None and parent >= 1 << 63:
        parent -= 1 << 64
    return {
        "pk": record.span_pk,
        "name": record.name,
        "lane": scope.lanes.lane_for(record.pid, record.attributes, parent, record.span_pk),
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_span_id": record.parent_span_id,
        "kind": record.kind,
        "status": record.status_code,
        "status_description": record.status_description,
        "start": scope.rel(record.start_ns),
        "end": scope.rel(record.end_ns),
        "pid": record.pid,
        "process_name": record.process_name,
        "scope": record.scope_name,
        "attributes": record.attributes,
        "events": [
            {"name": e.name, "t": scope.rel(e.time_ns), "attributes": e.attributes}
            for e in record.events
        ],
        "links": [
            {"trace_id": link.trace_id, "span_id": link.span_id, "attributes": link.attributes}
            for link in record.links
        ],
    }


def _diff(db: Any, name: str, at_ns: int | None) -> dict[str, Any] | None:
    """The last change of ``name`` at ``at_ns``: which fields went from what to what."""
    if at_ns is None:
        return None
    records = _state._events_where(db.conn, _state.OBJECT, name, "AND e.time_ns = ?", (at_ns,))
    if not records:
        return None
    record = records[-1]
    fields = []
    for i, field in enumerate(record.fields):
        old = record.old_values[i] if record.old_values and i < len(record.old_values) else None
        new = record.values[i] if record.values and i < len(record.values) else None
        fields.append({"field": field, "old": old, "new": new})
    return {
        "kind": record.kind,
        "method": record.method,
        "fields": fields,
        "details": [{"path": p, "old": o, "new": n} for p, o, n in record.details],
        "transition": record.transition,
        "span_id": record.span_id,
    }


def cursor(db: Any, scope: Scope, at: int, since: int) -> dict[str, Any]:
    """Every traced object's state at ``at`` (ns since t0), with the diff its last change
    made, and the messages sent since ``since`` that were not yet received at ``at``."""
    at_ns = scope.t0 + at
    objects = []
    for name in db.state_objects()[:MAX_OBJECTS]:
        state = db.state_at(name, at_ns)
        if state is None:
            continue
        change = state.last_change_ns if state.last_change_ns is not None else state.snapshot_ns
        objects.append(
            {
                "object": name,
                "class": state.class_name,
                "pid": state.pid,
                "fields": state.fields,
                "complete": state.complete,
                "notes": state.notes,
                "changed_at": None if change is None else scope.rel(change),
                "last_change": _diff(db, name, change),
            }
        )
    flying = in_flight(db.conn, scope, at, since)
    return {"at": at, "objects": objects, "in_flight": flying}


def search(db: Any, scope: Scope, text: str) -> dict[str, Any]:
    """Spans of the scope whose name contains ``text`` (case-insensitive), by start."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found = []
    for span_pk, name, start, end, pid, attributes, parent in db.conn.execute(
        "SELECT span_pk, name, start_ns, end_ns, pid, attributes, parent_span_id FROM spans "
        "WHERE start_ns >= ? AND start_ns <= ? AND name LIKE ? ESCAPE '\\' "
        "ORDER BY start_ns LIMIT ?",
        (scope.t0, scope.t1, pattern, MAX_FOUND + 1),
    ):
        attrs = json.loads(attributes or "{}")
        found.append(
            {
                "pk": span_pk,
                "name": name,
                "lane": scope.lanes.lane_for(pid, attrs, parent, span_pk),
                "start": scope.rel(start),
                "end": scope.rel(end),
            }
        )
    return {"spans": found[:MAX_FOUND], "more": len(found) > MAX_FOUND}
