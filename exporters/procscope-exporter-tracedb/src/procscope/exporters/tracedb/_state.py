"""State histories of traced objects, from the state instrumentor's span events.

Owned by the state instrumentor (procscope-instrumentation-state); the names of events and
attributes are those of docs/semantic-conventions.md, "State instrumentor".

Every event of an object carries ``procscope.state.object`` (its name) and
``procscope.state.epoch`` (``"<name>/<n>"``: n snapshots of it were recorded before; a
snapshot carries its own number). Both are indexed (``event_attrs``), so:

* the history of an object is one index seek (all its events);
* its state at an instant is a binary search over its snapshot numbers (a few index seeks,
  however long the history) for the last snapshot at or before the instant, then one seek
  for the changes of that epoch (and the one before: a change that raced the snapshot in
  another thread may carry the older number). Fields are replayed in the order of their
  sequence numbers (``procscope.state.field_seqs``), not of event times: two threads'
  method calls may end in either order, but the last assignment wins, as in the object.

An object with no snapshot at or before the instant (the first one was not sampled, or
its trace was dropped) is rebuilt from its changes alone and marked incomplete.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._query import json_object
from ._runs import RunFilter

EVENT_CHANGE = "procscope.state.change"
EVENT_SNAPSHOT = "procscope.state.snapshot"
EVENT_TRANSITION = "procscope.state.transition"
OBJECT = "procscope.state.object"
EPOCH = "procscope.state.epoch"
ABSENT = "<absent>"
NOT_CAPTURED = "(not captured)"

_STATE_EVENTS = (EVENT_CHANGE, EVENT_SNAPSHOT, EVENT_TRANSITION)
_EVENT_COLUMNS = "e.event_pk, e.name, e.time_ns, e.attributes, s.pid, s.trace_id, s.span_id"
# How many missing snapshot numbers the search steps over before it gives up on them
# (a dropped trace loses its snapshots) and rebuilds from every event instead.
_MISSING_SNAPSHOT_STEPS = 64


@dataclass
class StateRecord:
    """One recorded moment of an object: a snapshot, a change, or a transition.

    ``values``/``old_values`` hold the reprs of each field's new/old whole value, in the
    order of ``fields`` (None when values were not captured). ``details`` are the changes
    inside containers: ``(path, old, new)``, e.g. ``("items[2]", "<absent>", "5")``.
    """

    kind: str  # "snapshot", "change" or "transition"
    time_ns: int
    object: str
    seq: int
    method: str | None
    fields: list[str]
    field_seqs: list[int]
    values: list[str] | None
    old_values: list[str] | None
    details: list[tuple[str, str | None, str | None]]
    snapshot_reason: str | None
    transition: dict[str, Any] | None
    pid: int
    trace_id: str
    span_id: str
    epoch: int
    class_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StateAt:
    """An object's state at an instant: field -> repr (None when values were not captured).

    ``complete`` is False when no snapshot at or before the instant was found (the state
    is then rebuilt from the changes alone and may miss fields), or when the snapshot in
    use was a resynchronisation after changes that were not recorded (sampled out).
    """

    object: str
    at_ns: int
    fields: dict[str, str | None]
    pid: int | None
    snapshot_ns: int | None
    snapshot_reason: str | None
    changes_applied: int
    complete: bool
    last_change_ns: int | None = None
    class_name: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_ns(when: Any) -> int:
    """An instant as epoch nanoseconds: int ns, float seconds, or a datetime (naive=local)."""
    if isinstance(when, bool):
        raise TypeError("a time is epoch nanoseconds (int), seconds (float) or a datetime")
    if isinstance(when, int):
        return when
    if isinstance(when, float):
        return int(when * 1e9)
    if isinstance(when, _dt.datetime):
        return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    raise TypeError("a time is epoch nanoseconds (int), seconds (float) or a datetime")


def describe(record: StateRecord) -> str:
    """What one record changed, as ``field: old → new; ...``."""
    if record.kind == "snapshot":
        pairs = _pairs(record.fields, record.values)
        return f"snapshot ({record.snapshot_reason}): " + ", ".join(f"{k}={v}" for k, v in pairs)
    parts: list[str] = []
    if record.kind == "transition":
        t = record.transition or {}
        passed = t.get("conditions_passed")
        verdict = (
            "" if passed is None else (" (conditions passed)" if passed else " (conditions failed)")
        )
        return f"{t.get('source')} → {t.get('destination')}{verdict}"
    nested = {path for path, _old, _new in record.details}
    detailed_fields = {path.split("[")[0].split(".")[0].split("{")[0] for path in nested}
    for i, name in enumerate(record.fields):
        if name in detailed_fields:
            continue
        old = _at(record.old_values, i)
        new = _at(record.values, i)
        if old is None and new is None:
            parts.append(name)
        else:
            parts.append(f"{name}: {old or '?'} → {new or '?'}")
    for path, old, new in record.details:
        if old is None and new is None:
            parts.append(path)
        else:
            parts.append(f"{path}: {old} → {new}")
    return "; ".join(parts)


def _at(values: list[str] | None, index: int) -> str | None:
    if values is None or index >= len(values):
        return None
    return values[index]


def _pairs(fields: list[str], values: list[str] | None) -> list[tuple[str, str]]:
    return [(f, _at(values, i) or NOT_CAPTURED) for i, f in enumerate(fields)]


def _epoch_value(name: str, n: int) -> str:
    return f"{name}/{n}"


def _record(row: tuple[Any, ...]) -> StateRecord | None:
    _pk, event_name, time_ns, attributes_json, pid, trace_id, span_id = row
    if event_name not in _STATE_EVENTS:
        return None
    attributes = json_object(attributes_json)
    kind = {
        EVENT_CHANGE: "change",
        EVENT_SNAPSHOT: "snapshot",
        EVENT_TRANSITION: "transition",
    }[event_name]
    paths = list(attributes.get("procscope.state.change.paths") or [])
    olds = attributes.get("procscope.state.change.old")
    news = attributes.get("procscope.state.change.new")
    details = [
        (path, olds[i] if olds else None, news[i] if news else None) for i, path in enumerate(paths)
    ]
    transition = None
    if kind == "transition":
        transition = {
            "trigger": attributes.get("procscope.state.transition.trigger"),
            "source": attributes.get("procscope.state.transition.source"),
            "destination": attributes.get("procscope.state.transition.destination"),
            "machine": attributes.get("procscope.state.transition.machine"),
            "conditions_passed": attributes.get("procscope.state.transition.conditions_passed"),
        }
    fields = [str(f) for f in attributes.get("procscope.state.fields") or []]
    seq = int(attributes.get("procscope.state.seq") or 0)
    field_seqs = [int(s) for s in attributes.get("procscope.state.field_seqs") or []]
    if len(field_seqs) != len(fields):
        field_seqs = [seq] * len(fields)
    epoch_text = str(attributes.get(EPOCH) or "")
    _, _, epoch_number = epoch_text.rpartition("/")
    values = attributes.get("procscope.state.values")
    old_values = attributes.get("procscope.state.old_values")
    return StateRecord(
        kind=kind,
        time_ns=int(time_ns),
        object=str(attributes.get(OBJECT, "")),
        seq=seq,
        method=attributes.get("procscope.state.method"),
        fields=fields,
        field_seqs=field_seqs,
        values=list(values) if values is not None else None,
        old_values=list(old_values) if old_values is not None else None,
        details=details,
        snapshot_reason=attributes.get("procscope.state.snapshot.reason"),
        transition=transition,
        pid=int(pid),
        trace_id=trace_id.hex() if isinstance(trace_id, bytes) else str(trace_id),
        span_id=format(int(span_id) & 0xFFFFFFFFFFFFFFFF, "016x"),
        epoch=int(epoch_number) if epoch_number.isdecimal() else 0,
        class_name=attributes.get("procscope.state.class"),
    )


def _events_where(
    conn: sqlite3.Connection,
    key: str,
    value: str,
    extra: str = "",
    params: Iterable[Any] = (),
    run: RunFilter | None = None,
) -> list[StateRecord]:
    in_run, run_params = run.spans("s") if run is not None else ("", [])
    if in_run:
        extra, params = f"{extra} AND {in_run}", (*params, *run_params)
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM event_attrs a "
        "JOIN events e ON e.event_pk = a.event_pk "
        "JOIN spans s ON s.span_pk = e.span_pk "
        f"WHERE a.key = ? AND a.value = ? {extra}",
        (key, value, *params),
    ).fetchall()
    records = [r for r in map(_record, rows) if r is not None]
    records.sort(key=lambda r: (r.time_ns, r.seq))
    return records


def state_objects(conn: sqlite3.Connection, run: RunFilter | None = None) -> list[str]:
    """The names of every object with recorded state (in the run), sorted."""
    in_run, run_params = run.spans("s") if run is not None else ("", [])
    if not in_run:
        rows = conn.execute(
            "SELECT DISTINCT value FROM event_attrs WHERE key = ? ORDER BY value", (OBJECT,)
        ).fetchall()
        return [str(r[0]) for r in rows]
    rows = conn.execute(
        "SELECT DISTINCT a.value FROM event_attrs a JOIN events e ON e.event_pk = a.event_pk "
        f"JOIN spans s ON s.span_pk = e.span_pk WHERE a.key = ? AND {in_run} ORDER BY a.value",
        (OBJECT, *run_params),
    ).fetchall()
    return [str(r[0]) for r in rows]


def state_history(
    conn: sqlite3.Connection, name: str, pid: int | None = None, run: RunFilter | None = None
) -> list[StateRecord]:
    """Every recorded snapshot, change and transition of the object ``name``, in time order."""
    records = _events_where(conn, OBJECT, name, run=run)
    if pid is not None:
        records = [r for r in records if r.pid == pid]
    return records


# ---------------------------------------------------------------------------- state_at


def _snapshots_numbered(
    conn: sqlite3.Connection, name: str, n: int, run: RunFilter | None = None
) -> list[StateRecord]:
    return [
        r
        for r in _events_where(
            conn, EPOCH, _epoch_value(name, n), "AND e.name = ?", (EVENT_SNAPSHOT,), run
        )
        if r.kind == "snapshot"
    ]


def _latest_number(conn: sqlite3.Connection, name: str, run: RunFilter | None = None) -> int:
    """The highest snapshot number recorded for ``name`` (0: none), by exponential search."""
    if not _snapshots_numbered(conn, name, 1, run):
        return 0
    low, high = 1, 2
    while _snapshots_numbered(conn, name, high, run):
        low, high = high, high * 2
    # Invariant: snapshot `low` exists, `high` does not (numbers are dense when nothing was
    # dropped; a gap only makes the search settle below it, which the caller tolerates).
    while high - low > 1:
        middle = (low + high) // 2
        if _snapshots_numbered(conn, name, middle, run):
            low = middle
        else:
            high = middle
    return low


def _pick(snapshots: list[StateRecord], at_ns: int, pid: int | None) -> StateRecord | None:
    fitting = [s for s in snapshots if s.time_ns <= at_ns and (pid is None or s.pid == pid)]
    return max(fitting, key=lambda s: (s.time_ns, s.seq)) if fitting else None


def _find_snapshot(
    conn: sqlite3.Connection, name: str, at_ns: int, pid: int | None, run: RunFilter | None = None
) -> StateRecord | bool | None:
    """The last snapshot at or before ``at_ns``; None if there is none; False if the
    numbering has gaps the search cannot trust (the caller then reads every event)."""
    latest = _latest_number(conn, name, run)
    if latest == 0:
        return None
    # Binary search for the highest number whose snapshot is at or before at_ns: snapshot
    # times grow with their number within one process.
    low, high = 0, latest + 1  # snapshot `low` fits (0: virtual), `high` does not
    found: StateRecord | None = None
    steps = 0
    while high - low > 1:
        middle = (low + high) // 2
        snapshots = _snapshots_numbered(conn, name, middle, run)
        if not snapshots:
            steps += 1
            if steps > _MISSING_SNAPSHOT_STEPS:
                return False
            high = middle  # a gap: look below it
            continue
        pick = _pick(snapshots, at_ns, pid)
        if pick is not None:
            low, found = middle, pick
        else:
            high = middle
    return found


def _replay(
    name: str, at_ns: int, snapshot: StateRecord | None, changes: list[StateRecord]
) -> StateAt:
    fields: dict[str, str | None] = {}
    field_seq: dict[str, int] = {}
    base_seq = 0
    notes: list[str] = []
    complete = snapshot is not None
    if snapshot is not None:
        base_seq = snapshot.seq
        values = snapshot.values
        for i, field_name in enumerate(snapshot.fields):
            fields[field_name] = values[i] if values is not None and i < len(values) else None
        if snapshot.snapshot_reason == "resync":
            notes.append("some changes before this snapshot were not recorded (sampled out)")
    applied = 0
    last_change = None
    pid = snapshot.pid if snapshot is not None else None
    entries: list[tuple[int, str, str | None]] = []
    for record in changes:
        if record.time_ns > at_ns or record.kind == "snapshot":
            continue
        if pid is not None and record.pid != pid:
            continue
        if record.kind == "transition" and not record.fields:
            continue  # conditions failed: no state moved
        counted = False
        for i, field_name in enumerate(record.fields):
            seq = record.field_seqs[i] if i < len(record.field_seqs) else record.seq
            if snapshot is not None and seq <= base_seq:
                continue  # already in the snapshot
            value = record.values[i] if record.values is not None else None
            entries.append((seq, field_name, value))
            counted = True
        if counted:
            applied += 1
            last_change = (
                record.time_ns if last_change is None else max(last_change, record.time_ns)
            )
            if pid is None:
                pid = record.pid
    for seq, field_name, value in sorted(entries, key=lambda e: e[0]):
        if seq < field_seq.get(field_name, -1):
            continue
        field_seq[field_name] = seq
        if value == ABSENT:
            fields.pop(field_name, None)
        else:
            fields[field_name] = value
    if snapshot is None:
        notes.append("no snapshot at or before this time: rebuilt from changes alone")
    return StateAt(
        object=name,
        at_ns=at_ns,
        fields=fields,
        pid=pid,
        snapshot_ns=snapshot.time_ns if snapshot is not None else None,
        snapshot_reason=snapshot.snapshot_reason if snapshot is not None else None,
        changes_applied=applied,
        complete=complete and snapshot is not None and snapshot.snapshot_reason != "resync",
        last_change_ns=last_change,
        class_name=snapshot.class_name if snapshot is not None else None,
        notes=notes,
    )


def state_at(
    conn: sqlite3.Connection,
    name: str,
    at: Any,
    pid: int | None = None,
    run: RunFilter | None = None,
) -> StateAt | None:
    """The state of the object ``name`` at ``at`` (epoch ns, seconds, or a datetime), or
    None if nothing of it was recorded at or before then.

    With several processes recording under one name (a forked child keeps its parent's
    objects), ``pid`` chooses one; by default the process of the latest snapshot at or
    before ``at`` wins.
    """
    at_ns = to_ns(at)
    if pid is not None:
        # Snapshot numbers of a forked child continue its parent's: the number search
        # cannot single out one process, so read that object's events (rare: one name
        # recorded by several processes).
        return _state_from_everything(conn, name, at_ns, pid, run)
    snapshot = _find_snapshot(conn, name, at_ns, None, run)
    if snapshot is False:
        return _state_from_everything(conn, name, at_ns, pid, run)
    assert snapshot is None or isinstance(snapshot, StateRecord)
    if snapshot is None:
        # No snapshot yet at that time: the changes before the first snapshot (epoch 0).
        changes = _events_where(
            conn, EPOCH, _epoch_value(name, 0), "AND e.time_ns <= ?", (at_ns,), run
        )
        if pid is not None:
            changes = [c for c in changes if c.pid == pid]
        if not changes:
            return None
        return _replay(name, at_ns, None, changes)
    changes = []
    for number in (snapshot.epoch - 1, snapshot.epoch):
        if number < 0:
            continue
        changes.extend(
            _events_where(
                conn,
                EPOCH,
                _epoch_value(name, number),
                "AND e.time_ns >= ? AND e.time_ns <= ?",
                (snapshot.time_ns - 1_000_000_000, at_ns),
                run,
            )
        )
    changes.sort(key=lambda r: (r.time_ns, r.seq))
    return _replay(name, at_ns, snapshot, changes)


def _state_from_everything(
    conn: sqlite3.Connection, name: str, at_ns: int, pid: int | None, run: RunFilter | None = None
) -> StateAt | None:
    records = [r for r in state_history(conn, name, pid, run) if r.time_ns <= at_ns]
    if not records:
        return None
    snapshots = [r for r in records if r.kind == "snapshot"]
    snapshot = max(snapshots, key=lambda s: (s.time_ns, s.seq)) if snapshots else None
    return _replay(name, at_ns, snapshot, records)
