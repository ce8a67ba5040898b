"""What the page draws for one visible window: spans, message arrows, state marks.

The page asks for a time window and its width in pixels. When the window holds few
spans (:data:`MAX_SPANS`), every span in it is sent, each with its lane; otherwise each
process lane gets a count of span starts per bucket of a few pixels (an index-only range
scan of ``spans (pid, start_ns)`` per process: no span row is read), and the thread and
task lanes keep their lifetime bars. So the work per request follows the window's size
in buckets, never the DB's size in spans.

Spans that overlap the window but started before it: a span shorter than the scope's
``long_ns`` starts less than that before the window's start, so the range scan starts
there; the longer ones (process, thread and task lifetimes, a program's main span) are
found once per scope by :func:`long_spans` and added when they overlap.

Times in and out are nanoseconds since the scope's ``t0`` (JSON numbers are doubles:
epoch nanoseconds would lose their last digits).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ._lanes import Lanes

MAX_SPANS = 4000  # above this many span starts in a window, process lanes show density
MAX_MARKS = 4000  # the same for state marks (one "events" track instead)
MAX_IN_FLIGHT = 500  # messages looked at for the cursor (the last sent before it)
MAX_LONG = 2000  # long spans kept per scope (the longest)
MESSAGE_ID = "messaging.message.id"
OBJECT = "procscope.state.object"
FLIGHT_PREFIX = "procscope.flight."
STATUS_ERROR = 2
PRODUCER, CONSUMER = 3, 4
KINDS = ("internal", "server", "client", "producer", "consumer")
_CHUNK = 500

_SPAN_COLUMNS = (
    "span_pk, trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, "
    "status_code, attributes, pid"
)


@dataclass
class Scope:
    """A run (or the whole DB): its time range, its processes, its lanes, its long spans."""

    t0: int
    t1: int
    lanes: Lanes
    pids: set[int] | None = None
    long_ns: int = 0
    long: list[tuple[Any, ...]] = field(default_factory=list)

    def rel(self, ns: int) -> int:
        return int(ns) - self.t0


def long_spans(conn: sqlite3.Connection, t0: int, t1: int) -> tuple[int, list[tuple[Any, ...]]]:
    """(threshold, rows): the spans of [t0, t1] longer than 1/2000 of it (at most
    :data:`MAX_LONG`, the longest; the threshold is then the shortest kept)."""
    threshold = max(1_000_000, (t1 - t0) // 2000)
    rows = conn.execute(
        f"SELECT {_SPAN_COLUMNS} FROM spans WHERE end_ns - start_ns > ? "
        "AND start_ns >= ? AND start_ns <= ? ORDER BY end_ns - start_ns DESC LIMIT ?",
        (threshold, t0, t1, MAX_LONG + 1),
    ).fetchall()
    if len(rows) > MAX_LONG:
        rows = rows[:MAX_LONG]
        threshold = rows[-1][7] - rows[-1][6]
    return threshold, rows


def _flight(attributes: dict[str, Any]) -> bool:
    return any(key.startswith(FLIGHT_PREFIX) for key in attributes)


def _span_json(scope: Scope, row: tuple[Any, ...], attributes: dict[str, Any]) -> dict[str, Any]:
    span_pk, _trace, span_id, parent, name, kind, start, end, status, _a, pid = row
    lane = scope.lanes.lane_for(pid, attributes, parent, span_pk)
    scope.lanes.note_task_child(span_id, lane)
    data: dict[str, Any] = {
        "pk": span_pk,
        "lane": lane,
        "name": name,
        "start": scope.rel(start),
        "end": scope.rel(end),
        "kind": KINDS[kind] if 0 <= kind < len(KINDS) else str(kind),
    }
    if status == STATUS_ERROR:
        data["error"] = True
    if _flight(attributes):
        data["flight"] = True
    return data


def window(
    conn: sqlite3.Connection, scope: Scope, start: int, end: int, buckets: int
) -> dict[str, Any]:
    """Everything drawn for the window [start, end) (ns since ``t0``) at ``buckets``
    buckets across (about one per pixel or two)."""
    buckets = max(1, min(int(buckets), 4000))
    a, b = scope.t0 + int(start), scope.t0 + max(int(end), int(start) + 1)
    scope.lanes.new_lanes.clear()
    (count,) = conn.execute(
        "SELECT count(*) FROM spans WHERE start_ns >= ? AND start_ns < ?", (a - scope.long_ns, b)
    ).fetchone()
    long_rows = [r for r in scope.long if r[6] < b and r[7] >= a and _in(scope, r[10])]
    long_pks = {r[0] for r in long_rows}
    out: dict[str, Any] = {"start": int(start), "end": b - scope.t0, "buckets": buckets}
    rows: list[tuple[Any, ...]] = list(long_rows)
    if count <= MAX_SPANS:
        out["mode"] = "spans"
        rows += [
            r
            for r in conn.execute(
                f"SELECT {_SPAN_COLUMNS} FROM spans WHERE start_ns >= ? AND start_ns < ? "
                "ORDER BY start_ns",
                (a - scope.long_ns, b),
            )
            if r[0] not in long_pks and r[7] >= a and _in(scope, r[10])
        ]
    else:
        out["mode"] = "density"
        out["density"] = _density(conn, scope, a, b, buckets)
    spans, message_ids = [], set()
    for row in rows:
        attributes = json.loads(row[9] or "{}")
        spans.append(_span_json(scope, row, attributes))
        if MESSAGE_ID in attributes:
            message_ids.add(str(attributes[MESSAGE_ID]))
    out["spans"] = spans
    out["messages"] = messages(conn, scope, message_ids)
    out.update(_state_marks(conn, scope, a, b, buckets))
    out["new_lanes"] = [scope.lanes.by_id[i].to_dict() for i in scope.lanes.new_lanes]
    return out


def _in(scope: Scope, pid: int) -> bool:
    return scope.pids is None or pid in scope.pids


def _density(
    conn: sqlite3.Connection, scope: Scope, a: int, b: int, buckets: int
) -> list[dict[str, Any]]:
    """Span starts per bucket for each process lane (covering index, no row read)."""
    out = []
    for lane in scope.lanes.ordered():
        if lane.kind != "process":
            continue
        counts = [0] * buckets
        for bucket, n in conn.execute(
            "SELECT (start_ns - ?) * ? / ?, count(*) FROM spans "
            "WHERE pid = ? AND start_ns >= ? AND start_ns < ? GROUP BY 1",
            (a, buckets, b - a, lane.pid, a, b),
        ):
            counts[min(int(bucket), buckets - 1)] += n
        if any(counts):
            out.append({"lane": lane.id, "counts": counts})
    return out


def in_flight(conn: sqlite3.Connection, scope: Scope, at: int, since: int) -> list[dict[str, Any]]:
    """Messages sent in [since, at] (ns since t0) and not received by ``at``: of the
    :data:`MAX_IN_FLIGHT` sent last before ``at`` (a backward walk of the start-time
    index that stops there), as arrows."""
    ids = set()
    for (attributes,) in conn.execute(
        "SELECT attributes FROM spans WHERE start_ns >= ? AND start_ns <= ? AND kind = ? "
        "ORDER BY start_ns DESC LIMIT ?",
        (scope.t0 + since, scope.t0 + at, PRODUCER, MAX_IN_FLIGHT),
    ):
        message_id = json.loads(attributes or "{}").get(MESSAGE_ID)
        if message_id is not None:
            ids.add(str(message_id))
    return [
        arrow
        for arrow in messages(conn, scope, ids)
        if arrow["sent"] <= at and (arrow["received"] is None or arrow["received"] > at)
    ]


def messages(conn: sqlite3.Connection, scope: Scope, message_ids: set[str]) -> list[dict[str, Any]]:
    """One arrow per message with a span in the window: sender's lane at the put's start
    to receiver's lane at the get's end (``to`` is None for a message not received)."""
    ends: dict[str, dict[int, tuple[Any, ...]]] = {}
    ids = sorted(message_ids)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT a.value, s.span_pk, s.span_id, s.parent_span_id, s.kind, s.start_ns, "
            f"s.end_ns, s.attributes, s.pid FROM span_attrs a "
            f"JOIN spans s ON s.span_pk = a.span_pk WHERE a.key = ? AND a.value IN ({marks})",
            (MESSAGE_ID, *chunk),
        ):
            ends.setdefault(str(row[0]), {}).setdefault(int(row[4]), row)
    arrows = []
    for message_id in ids:
        pair = ends.get(message_id, {})
        send, receive = pair.get(PRODUCER), pair.get(CONSUMER)
        if send is None:
            continue
        send_attrs = json.loads(send[7] or "{}")
        arrow: dict[str, Any] = {
            "id": message_id,
            "queue": send_attrs.get("messaging.destination.name"),
            "from": scope.lanes.lane_for(send[8], send_attrs, send[3], send[1]),
            "from_pk": send[1],
            "sent": scope.rel(send[5]),
            "to": None,
            "to_pk": None,
            "received": None,
            "content": send_attrs.get("procscope.messaging.content"),
        }
        if receive is not None:
            attrs = json.loads(receive[7] or "{}")
            arrow["to"] = scope.lanes.lane_for(receive[8], attrs, receive[3], receive[1])
            arrow["to_pk"] = receive[1]
            arrow["received"] = scope.rel(receive[6])
        arrows.append(arrow)
    return arrows


def _state_marks(
    conn: sqlite3.Connection, scope: Scope, a: int, b: int, buckets: int
) -> dict[str, Any]:
    """A mark per state event in the window on its object's track; past
    :data:`MAX_MARKS`, one count per bucket of every span event instead."""
    (count,) = conn.execute(
        "SELECT count(*) FROM events WHERE time_ns >= ? AND time_ns < ?", (a, b)
    ).fetchone()
    if count > MAX_MARKS:
        counts = [0] * buckets
        for bucket, n in conn.execute(
            "SELECT (time_ns - ?) * ? / ?, count(*) FROM events "
            "WHERE time_ns >= ? AND time_ns < ? GROUP BY 1",
            (a, buckets, b - a, a, b),
        ):
            counts[min(int(bucket), buckets - 1)] += n
        return {"states": [], "event_density": counts}
    marks = []
    for event_pk, span_pk, name, time_ns, obj, pid in conn.execute(
        "SELECT e.event_pk, e.span_pk, e.name, e.time_ns, a.value, s.pid FROM events e "
        "JOIN event_attrs a ON a.event_pk = e.event_pk AND a.key = ? "
        "JOIN spans s ON s.span_pk = e.span_pk "
        "WHERE e.time_ns >= ? AND e.time_ns < ? ORDER BY e.time_ns",
        (OBJECT, a, b),
    ):
        if _in(scope, pid):
            marks.append(
                {
                    "object": obj,
                    "t": scope.rel(time_ns),
                    "kind": name.rpartition(".")[2],
                    "span": span_pk,
                    "event": event_pk,
                }
            )
    return {"states": marks}
