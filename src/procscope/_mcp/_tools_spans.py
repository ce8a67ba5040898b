"""Tools over spans: get_trace (one trace as a tree), search_spans (spans by name,
attribute and time)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._reader import Reader
from ._shape import clip, clip_attributes, compact, iso, left_out, ms
from ._spec import RUN, SINCE, UNTIL, Param, Tool, ToolInputError, limit_param
from ._when import time_range

MAX_TRACE_SPANS = 200
MAX_SPANS = 200
DEFAULT_SPANS = 30
MAX_EVENTS_PER_SPAN = 10
# search_spans reads the run window by window and answers with what it found by then.
SEARCH_SECONDS = 0.8
_WINDOWS = 16
# Attributes a span's "who" and name already say: left out of results (fewer tokens).
_SAID = frozenset(
    {"thread.id", "thread.name", "procscope.task.name", "messaging.operation.name",
     "procscope.messaging.sender.thread.id"}
)  # fmt: skip


def who(span: Any, names: Mapping[int, str]) -> str:
    """The actor that made the span, named as every procscope command names it
    (``name:pid``, ``name:pid/thread``, ``name:pid/Task-6``; ``names``: pid -> the
    process's one name, from :func:`process_names`)."""
    from procscope.exporters.tracedb import span_actor

    return span_actor(span.pid, span.process_name, span.attributes, names)


def process_names(reader: Reader, run_id: str | None) -> dict[int, str]:
    from procscope.exporters.tracedb._actors import process_names as names_of

    return names_of(reader.db().processes(run=run_id))


def span_item(span: Any, names: Mapping[int, str], *, events: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = compact(
        {
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "kind": span.kind,
            "who": who(span, names),
            "start": iso(span.start_ns),
            "duration_ms": ms(span.duration_ns),
        }
    )
    if span.is_error:
        item["error"] = clip(span.status_description) or "ERROR"
    item["attributes"] = clip_attributes(
        {k: v for k, v in span.attributes.items() if k not in _SAID}
    )
    if events and span.events:
        item["events"] = [
            {"name": e.name, "time": iso(e.time_ns), "attributes": clip_attributes(e.attributes)}
            for e in span.events[:MAX_EVENTS_PER_SPAN]
        ]
        if len(span.events) > MAX_EVENTS_PER_SPAN:
            item["events_left_out"] = len(span.events) - MAX_EVENTS_PER_SPAN
    if span.links:
        item["links"] = [{"trace_id": ln.trace_id, "span_id": ln.span_id} for ln in span.links[:5]]
    return item


def get_trace(reader: Reader, trace_id: str, depth: int | None) -> dict[str, Any]:
    db = reader.db()
    wanted = trace_id.strip().lower()
    if not wanted or any(ch not in "0123456789abcdef" for ch in wanted) or len(wanted) > 32:
        raise ToolInputError(
            "trace_id: expected up to 32 hex digits (a trace_id from another tool), "
            f"got {trace_id!r}"
        )
    if len(wanted) < 32:
        matches = db.find_trace_ids(wanted, limit=5)
        if len(matches) != 1:
            raise ToolInputError(
                f"trace_id {trace_id!r} starts "
                + ("no trace id" if not matches else f"several: {', '.join(matches)}")
                + "; pass a whole trace_id from another tool's result"
            )
        wanted = matches[0]
    with reader.deadline():
        tree = db.trace(wanted)
        if tree is None:
            raise ToolInputError(f"no trace {wanted} in this DB; trace ids come from other tools")
        row = db.conn.execute(
            "SELECT run_id FROM traces WHERE trace_id = ?", (bytes.fromhex(wanted),)
        ).fetchone()
        names = process_names(reader, row[0] if row and row[0] else reader.run(None))
    items: list[dict[str, Any]] = []
    deeper = 0

    def walk(node: Any, level: int) -> None:
        nonlocal deeper
        if depth is not None and level > depth:
            deeper += 1 + _count(node.children)
            return
        if len(items) < MAX_TRACE_SPANS:
            item = span_item(node.span, names)
            item["depth"] = level
            items.append(item)
        for child in node.children:
            walk(child, level + 1)

    for root in tree.roots:
        walk(root, 0)
    summary = tree.summary
    data: dict[str, Any] = {
        "trace_id": summary.trace_id,
        "root": summary.root_name,
        "start": iso(summary.start_ns),
        "duration_ms": ms(summary.duration_ns),
        "span_count": summary.span_count,
        "error_spans": summary.error_count,
        "processes": sorted({who(s, names).split("/")[0] for s in tree.spans})[:50],
        "spans": items,
        "order": "depth first: each span after its parent (depth 0 = a root)",
    }
    if deeper:
        data["deeper_spans_left_out"] = deeper
    left_out(
        data,
        "spans",
        len(tree.spans) - deeper,
        "a smaller depth, or search_spans(attr='...') within the trace's time",
    )
    return data


def _count(nodes: list[Any]) -> int:
    return sum(1 + _count(n.children) for n in nodes)


def search_spans(
    reader: Reader,
    name: str | None,
    attr: str | None,
    since: str | None,
    until: str | None,
    errors_only: bool | None,
    limit: int | None,
    run: str | None,
) -> dict[str, Any]:
    from procscope._cli._output import parse_attribute

    run_id = reader.run(run)
    db = reader.db()
    attributes: dict[str, Any] = {}
    if attr is not None:
        try:
            key, value = parse_attribute(attr)
        except ValueError as exc:
            raise ToolInputError(f"attr: {exc} (e.g. messaging.destination.name=jobs)") from None
        attributes[key] = value
    start_ns, end_ns = time_range(since, until)
    low, high = _extent(reader, run_id)
    start_ns = low if start_ns is None else max(start_ns, low)
    end_ns = high if end_ns is None else min(end_ns, high)
    wanted = limit or DEFAULT_SPANS
    found: list[Any] = []
    cursor = start_ns
    step = max(1, (end_ns - start_ns) // _WINDOWS)
    stop_at = time.monotonic() + SEARCH_SECONDS
    while cursor < end_ns and len(found) <= wanted:
        remaining = stop_at - time.monotonic()
        if remaining <= 0:
            break
        upper = min(end_ns, cursor + step)
        try:
            with reader.deadline(remaining):
                found += db.spans(
                    name=name,
                    start_ns=cursor,
                    end_ns=upper,
                    attributes=attributes or None,
                    errors_only=bool(errors_only),
                    limit=wanted + 1 - len(found),
                    run=run_id,
                )
        except ToolInputError:
            break  # out of time in this window: answer with what was found before it
        cursor = upper
    names = process_names(reader, run_id) if found else {}
    items = [span_item(s, names, events=False) | {"trace_id": s.trace_id} for s in found[:wanted]]
    data: dict[str, Any] = {"run": run_id or "all", "spans": items}
    if len(found) > wanted:
        left_out(
            data,
            "spans",
            None,
            f"the next page: the same call with since='{iso(found[wanted - 1].start_ns + 1)}'",
        )
    elif cursor < end_ns:
        data["searched_until"] = iso(cursor)
        left_out(
            data,
            "spans",
            None,
            f"searched the spans that started before {iso(cursor)} only ({SEARCH_SECONDS} s "
            f"limit); continue with since='{iso(cursor)}', or filter by an indexed attribute "
            "(schema lists them)",
        )
    if not items and cursor >= end_ns:
        data["note"] = "no span matches; span names are globs (get*, *orders*)"
    return data


def _extent(reader: Reader, run_id: str | None) -> tuple[int, int]:
    """The time range to search: the run's, or the whole DB's."""
    db = reader.db()
    if run_id is not None:
        for run in db.runs():
            if run.run_id == run_id:
                return run.start_ns, run.end_ns + 1
    row = db.conn.execute("SELECT min(start_ns), max(start_ns) FROM spans").fetchone()
    if row[0] is None:
        return 0, 0
    return int(row[0]), int(row[1]) + 1


TOOLS = (
    Tool(
        "get_trace",
        "One trace as a tree: every span (depth first) with its process/thread/task "
        "(who), start, duration, error, attributes and events (exceptions with their stack "
        "trace, state changes), and the links that tie a message's receive to its send. "
        "Use it to follow one request or message across processes, with a trace_id from "
        f"another tool (a unique start of one works). At most {MAX_TRACE_SPANS} spans; "
        "depth limits how deep the tree goes.",
        get_trace,
        (
            Param(
                "trace_id",
                "string",
                "a trace id (32 hex digits) or a unique start of one",
                required=True,
            ),
            Param(
                "depth",
                "integer",
                "levels below the roots to show (0 = roots only)",
                minimum=0,
                maximum=1000,
            ),
        ),
    ),
    Tool(
        "search_spans",
        "Find spans (units of work: a process, thread, task, a message send or receive, "
        "a traced method) by name glob, one attribute (key=value; indexed keys such as "
        "messaging.destination.name, procscope.state.object and process.pid are fast) and "
        "time, in start order, with their trace ids. Use it when no other tool asks the "
        f"question; then get_trace for the whole story. Searches for {SEARCH_SECONDS} s at "
        "most and says where it stopped.",
        search_spans,
        (
            Param("name", "string", "the span name or a glob: 'get *', 'task Task-*', 'Account.*'"),
            Param("attr", "string", "one attribute filter KEY=VALUE, e.g. process.pid=4242"),
            SINCE,
            UNTIL,
            Param("errors_only", "boolean", "only spans that ended with an error"),
            limit_param(DEFAULT_SPANS, MAX_SPANS, "spans"),
            RUN,
        ),
    ),
)
