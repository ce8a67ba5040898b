"""Reading the trace DB: records, and the span/trace queries every other query builds on.

Functions take a ``sqlite3.Connection`` (the one of :class:`TraceDB`) so that the
processes/messages/state modules can reuse them: :func:`fetch_spans` turns any
``WHERE`` over ``spans s`` into :class:`SpanRecord` objects with events and links.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._runs import RunFilter
from ._schema import indexed_keys, parse_trace_id, span_id_from_db, trace_id_from_db

KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUSES = ("UNSET", "OK", "ERROR")

SPAN_COLUMNS = (
    "s.span_pk, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, "
    "s.end_ns, s.status_code, s.status_description, s.attributes, s.resource_id, "
    "s.scope_id, s.pid, s.process_name, sc.name, sc.version"
)
# The FROM clause that SPAN_COLUMNS reads from (scopes are few: a primary-key lookup).
SPAN_FROM = "spans s LEFT JOIN scopes sc ON sc.scope_id = s.scope_id"
_CHUNK = 500


# What a damaged attributes column (not a JSON object) reads as: its text, so that a
# reader shows the damage instead of failing on the whole DB.
DAMAGED_KEY = "procscope.damaged_json"


def json_object(text: str | bytes | None) -> dict[str, Any]:
    """A stored JSON object (attributes); ``{DAMAGED_KEY: text}`` when it is not one."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        value = None
    if isinstance(value, dict):
        return value
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return {DAMAGED_KEY: shown[:200]}


_json = json_object


@dataclass
class EventRecord:
    """A span event."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class LinkRecord:
    """A link from a span to another span (ids in hex)."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpanRecord:
    """One stored span. Ids are hex strings; times are epoch nanoseconds.

    ``pid`` and ``process_name`` are those of the process that exported the span.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status_code: str
    status_description: str | None
    attributes: dict[str, Any]
    pid: int
    process_name: str | None
    scope_name: str | None = None
    scope_version: str | None = None
    resource_id: int | None = None
    events: list[EventRecord] = field(default_factory=list)
    links: list[LinkRecord] = field(default_factory=list)
    span_pk: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def is_error(self) -> bool:
        return self.status_code == "ERROR"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("span_pk")
        data["duration_ns"] = self.duration_ns
        return data


@dataclass
class TraceSummary:
    """One trace as listed by ``traces()``: its root span's name, extent and counts."""

    trace_id: str
    root_name: str | None
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def has_error(self) -> bool:
        return self.error_count > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_ns"] = self.duration_ns
        data["has_error"] = self.has_error
        return data


@dataclass
class SpanNode:
    """A span and its children (ordered by start) in a trace tree."""

    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = self.span.to_dict()
        data["children"] = [child.to_dict() for child in self.children]
        return data


@dataclass
class TraceTree:
    """A whole trace: its summary, its spans (by start) and the tree they form.

    Spans whose parent is not in the DB (not exported, or pruned) are roots too.
    """

    summary: TraceSummary
    spans: list[SpanRecord]
    roots: list[SpanNode]

    def to_dict(self) -> dict[str, Any]:
        data = self.summary.to_dict()
        data["roots"] = [root.to_dict() for root in self.roots]
        return data


@dataclass
class Happening:
    """Something at an instant, for ``events_around``: a span's start or end, or an event."""

    time_ns: int
    what: str  # "span_start", "span_end" or "event"
    name: str  # the span's name, or the event's
    span: SpanRecord
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        span = self.span
        return {
            "time_ns": self.time_ns,
            "what": self.what,
            "name": self.name,
            "attributes": self.attributes,
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "span_name": span.name,
            "pid": span.pid,
            "process_name": span.process_name,
        }


def span_from_row(row: Sequence[Any]) -> SpanRecord:
    """A :class:`SpanRecord` (without events and links) from a row of ``SPAN_COLUMNS``."""
    return SpanRecord(
        trace_id=trace_id_from_db(row[1]),
        span_id=span_id_from_db(row[2]) or "",
        parent_span_id=span_id_from_db(row[3]),
        name=row[4],
        kind=KINDS[row[5]] if 0 <= row[5] < len(KINDS) else str(row[5]),
        start_ns=row[6],
        end_ns=row[7],
        status_code=STATUSES[row[8]] if 0 <= row[8] < len(STATUSES) else str(row[8]),
        status_description=row[9],
        attributes=_json(row[10]),
        resource_id=row[11],
        scope_name=row[15],
        scope_version=row[16],
        pid=row[13],
        process_name=row[14],
        span_pk=row[0],
    )


def fetch_spans(
    conn: sqlite3.Connection,
    where: str = "",
    params: Sequence[Any] = (),
    *,
    order: str = "s.start_ns, s.span_pk",
    limit: int | None = None,
    with_events: bool = True,
) -> list[SpanRecord]:
    """Spans matching ``where`` (SQL over ``spans s``), with their events and links."""
    sql = f"SELECT {SPAN_COLUMNS} FROM {SPAN_FROM}"
    if where:
        sql += f" WHERE {where}"
    if order:
        sql += f" ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    spans = [span_from_row(row) for row in conn.execute(sql, list(params))]
    if with_events and spans:
        attach_events_and_links(conn, spans)
    return spans


def attach_events_and_links(conn: sqlite3.Connection, spans: Sequence[SpanRecord]) -> None:
    by_pk = {span.span_pk: span for span in spans}
    pks = list(by_pk)
    for start in range(0, len(pks), _CHUNK):
        chunk = pks[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for span_pk, name, time_ns, attributes in conn.execute(
            f"SELECT span_pk, name, time_ns, attributes FROM events WHERE span_pk IN ({marks}) "
            "ORDER BY time_ns, event_pk",
            chunk,
        ):
            by_pk[span_pk].events.append(EventRecord(name, time_ns, _json(attributes)))
        for span_pk, trace_id, span_id, attributes in conn.execute(
            f"SELECT span_pk, trace_id, span_id, attributes FROM links WHERE span_pk IN ({marks})",
            chunk,
        ):
            by_pk[span_pk].links.append(
                LinkRecord(
                    trace_id_from_db(trace_id), span_id_from_db(span_id) or "", _json(attributes)
                )
            )


# Above this many matching index rows, a filter is "broad": scanning spans (or traces) in
# the wanted order and checking each against the index beats collecting every match.
BROAD_MATCHES = 2000


def attribute_condition(
    conn: sqlite3.Connection, key: str, value: Any, *, alias: str = "s"
) -> tuple[str, list[Any]]:
    """SQL (over ``spans <alias>``) for "attribute ``key`` equals ``value``".

    For indexed keys: a selective value becomes ``span_pk IN (index rows)``; a broad one
    (more than :data:`BROAD_MATCHES` rows) a correlated primary-key probe of the index,
    so that ``ORDER BY ... LIMIT`` queries stop early. Other keys: a JSON scan.
    """
    span_keys, _event_keys = indexed_keys(conn)
    if key in span_keys and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        if is_broad(conn, key, value):
            return (
                f"EXISTS (SELECT 1 FROM span_attrs a WHERE a.key = ? AND a.value = ? "
                f"AND a.span_pk = {alias}.span_pk)",
                [key, value],
            )
        return (
            f"{alias}.span_pk IN (SELECT span_pk FROM span_attrs WHERE key = ? AND value = ?)",
            [key, value],
        )
    path = '$."' + key.replace('"', '""') + '"'
    return f"json_extract({alias}.attributes, ?) = ?", [path, value]


def is_broad(conn: sqlite3.Connection, key: str, value: Any) -> bool:
    """Whether an indexed (key, value) has more than BROAD_MATCHES rows (bounded cost)."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM span_attrs WHERE key = ? AND value = ? LIMIT ?)",
        (key, value, BROAD_MATCHES + 1),
    ).fetchone()
    return int(row[0]) > BROAD_MATCHES


def span_conditions(
    conn: sqlite3.Connection,
    *,
    trace_id: str | bytes | int | None = None,
    name: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    pid: int | None = None,
    process_name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    errors_only: bool = False,
    run: RunFilter | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (over ``spans s``) for the filters of ``TraceDB.spans``."""
    clauses: list[str] = []
    params: list[Any] = []
    _add(clauses, params, run.spans("s") if run is not None else ("", []))
    if trace_id is not None:
        clauses.append("s.trace_id = ?")
        params.append(parse_trace_id(trace_id))
    if name is not None:
        if any(ch in name for ch in "*?["):
            clauses.append("s.name GLOB ?")
        else:
            clauses.append("s.name = ?")
        params.append(name)
    if start_ns is not None:
        clauses.append("s.start_ns >= ?")
        params.append(int(start_ns))
    if end_ns is not None:
        clauses.append("s.start_ns < ?")
        params.append(int(end_ns))
    if pid is not None:
        clauses.append("s.pid = ?")
        params.append(int(pid))
    if process_name is not None:
        clauses.append("s.process_name = ?")
        params.append(process_name)
    for key, value in (attributes or {}).items():
        clause, extra = attribute_condition(conn, key, value)
        clauses.append(clause)
        params.extend(extra)
    if errors_only:
        clauses.append("s.status_code = 2")
    return " AND ".join(clauses), params


def _add(clauses: list[str], params: list[Any], condition: tuple[str, list[Any]]) -> None:
    if condition[0]:
        clauses.append(condition[0])
        params.extend(condition[1])


def _add_started_in(
    clauses: list[str], params: list[Any], start_ns: int | None, end_ns: int | None
) -> None:
    """Traces (alias ``t``) that started in [start_ns, end_ns); None leaves a side open."""
    if start_ns is not None:
        clauses.append("t.start_ns >= ?")
        params.append(int(start_ns))
    if end_ns is not None:
        clauses.append("t.start_ns < ?")
        params.append(int(end_ns))


def summary_from_row(row: Sequence[Any]) -> TraceSummary:
    return TraceSummary(
        trace_id=trace_id_from_db(row[0]),
        start_ns=row[1],
        end_ns=row[2],
        span_count=row[3],
        error_count=row[4],
        root_name=row[5],
    )


def query_traces(
    conn: sqlite3.Connection,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    name: str | None = None,
    errors_only: bool = False,
    min_duration_ns: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    limit: int | None = 50,
    offset: int = 0,
    run: RunFilter | None = None,
    min_spans: int | None = None,
) -> list[TraceSummary]:
    """Traces that started in [start_ns, end_ns), newest first, filtered. ``min_spans``:
    only traces of at least that many spans, or with an error."""
    clauses: list[str] = []
    params: list[Any] = []
    _add(clauses, params, run.traces("t") if run is not None else ("", []))
    if min_spans is not None:
        clauses.append("(t.span_count >= ? OR t.error_count > 0)")
        params.append(int(min_spans))
    _add_started_in(clauses, params, start_ns, end_ns)
    if name is not None:
        clauses.append("t.root_name GLOB ?" if any(c in name for c in "*?[") else "t.root_name = ?")
        params.append(name)
    if errors_only:
        clauses.append("t.error_count > 0")
    if min_duration_ns is not None:
        clauses.append("t.end_ns - t.start_ns >= ?")
        params.append(int(min_duration_ns))
    for key, value in (attributes or {}).items():
        clause, extra = attribute_condition(conn, key, value)
        if clause.startswith("EXISTS"):
            # Broad: walk traces newest first, probing each one's spans.
            clauses.append(
                f"EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND {clause})"
            )
        else:
            clauses.append(f"t.trace_id IN (SELECT s.trace_id FROM spans s WHERE {clause})")
        params.extend(extra)
    sql = (
        "SELECT t.trace_id, t.start_ns, t.end_ns, t.span_count, t.error_count, t.root_name "
        "FROM traces t"
    )
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY t.start_ns DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return [summary_from_row(row) for row in conn.execute(sql, params)]


@dataclass
class FragmentGroup:
    """One-span traces without an error that share a root name, counted together
    (``TraceDB.trace_fragments``): fragments, not stories, such as the state change or
    the message of a program that wraps no span around its work."""

    root_name: str | None
    count: int
    first_start_ns: int
    last_start_ns: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_fragments(
    conn: sqlite3.Connection,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    run: RunFilter | None = None,
) -> list[FragmentGroup]:
    """One-span traces without an error that started in [start_ns, end_ns), grouped by
    root name, the most numerous first."""
    clauses = ["t.span_count = 1", "t.error_count = 0"]
    params: list[Any] = []
    _add(clauses, params, run.traces("t") if run is not None else ("", []))
    _add_started_in(clauses, params, start_ns, end_ns)
    rows = conn.execute(
        "SELECT t.root_name, count(*), min(t.start_ns), max(t.start_ns) FROM traces t "
        f"WHERE {' AND '.join(clauses)} GROUP BY t.root_name ORDER BY count(*) DESC, t.root_name",
        params,
    )
    return [FragmentGroup(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


def build_tree(spans: Iterable[SpanRecord]) -> list[SpanNode]:
    """Parent/child tree of spans (input ordered by start); orphans become roots."""
    nodes = {span.span_id: SpanNode(span) for span in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_span_id or "")
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def query_trace(
    conn: sqlite3.Connection, trace_id: str | bytes | int, run: RunFilter | None = None
) -> TraceTree | None:
    """One trace as a tree, or None if the DB (or the run) has no span of it."""
    key = parse_trace_id(trace_id)
    in_run, run_params = run.traces("traces") if run is not None else ("", [])
    # One read transaction: the summary and the spans are of the same moment even
    # while writers commit.
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT trace_id, start_ns, end_ns, span_count, error_count, root_name "
            "FROM traces WHERE trace_id = ?" + (f" AND {in_run}" if in_run else ""),
            (key, *run_params),
        ).fetchone()
        if row is None:
            return None
        spans = fetch_spans(conn, "s.trace_id = ?", (key,))
    finally:
        conn.execute("COMMIT")
    return TraceTree(summary_from_row(row), spans, build_tree(spans))


def query_events_around(
    conn: sqlite3.Connection, time_ns: int, window_ns: int, run: RunFilter | None = None
) -> list[Happening]:
    """Span starts, span ends and span events within ``window_ns`` of ``time_ns``,
    across every process (of the run), in time order."""
    low, high = int(time_ns - window_ns), int(time_ns + window_ns)
    # A span of the run starts within the run's range, but may end (or hold an event)
    # after its start: the run's condition applies to the spans found, not to the times.
    in_run, run_params = run.spans("s") if run is not None else ("", [])
    conn.execute("BEGIN")
    try:
        spans = fetch_spans(
            conn,
            "s.span_pk IN (SELECT span_pk FROM spans WHERE start_ns BETWEEN ? AND ? "
            "UNION SELECT span_pk FROM spans WHERE end_ns BETWEEN ? AND ? "
            "UNION SELECT span_pk FROM events WHERE time_ns BETWEEN ? AND ?)"
            + (f" AND {in_run}" if in_run else ""),
            (low, high, low, high, low, high, *run_params),
        )
    finally:
        conn.execute("COMMIT")
    happenings: list[Happening] = []
    for span in spans:
        if low <= span.start_ns <= high:
            happenings.append(Happening(span.start_ns, "span_start", span.name, span))
        if low <= span.end_ns <= high:
            happenings.append(Happening(span.end_ns, "span_end", span.name, span))
        for event in span.events:
            if low <= event.time_ns <= high:
                happenings.append(
                    Happening(event.time_ns, "event", event.name, span, event.attributes)
                )
    order = {"span_start": 0, "event": 1, "span_end": 2}
    happenings.sort(key=lambda h: (h.time_ns, order[h.what]))
    return happenings
