"""Tools about traced objects' state: state_history, state_at."""

from __future__ import annotations

from typing import Any

from ._reader import Reader
from ._shape import clip, iso, left_out
from ._spec import RUN, SINCE, UNTIL, Param, Tool, ToolInputError, limit_param
from ._when import instant, time_range

MAX_RECORDS = 200
DEFAULT_RECORDS = 50
_OBJECT = Param(
    "object",
    "string",
    "the traced object's name (as procscope.trace_state or procscope.name named it)",
    required=True,
)
_PID = Param(
    "pid",
    "integer",
    "only the object of this process (objects of the same name in several processes)",
    minimum=0,
)


def _unknown(reader: Reader, name: str, run_id: str | None) -> ToolInputError:
    known = reader.db().state_objects(run=run_id)
    if not known:
        return ToolInputError(
            "no object state is recorded in this run (objects are traced with "
            "procscope.trace_state); try run='all'"
        )
    shown = ", ".join(known[:40]) + (f" ... ({len(known)} in all)" if len(known) > 40 else "")
    return ToolInputError(f"no traced object named {name!r} in this run; known: {shown}")


def _record(record: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"time": iso(record.time_ns), "kind": record.kind}
    if record.kind == "snapshot":
        item["reason"] = record.snapshot_reason
        values = record.values or []
        item["state"] = {
            f: clip(values[i]) if i < len(values) else None for i, f in enumerate(record.fields)
        }
    elif record.kind == "transition":
        item["transition"] = record.transition
    else:
        item["method"] = record.method
        olds, news = record.old_values or [], record.values or []
        item["changes"] = {
            f: [clip(olds[i], 120) if i < len(olds) else None,
                clip(news[i], 120) if i < len(news) else None]
            for i, f in enumerate(record.fields)
        }  # fmt: skip
        for path, old, new in record.details[:10]:
            item["changes"][path] = [clip(old, 120), clip(new, 120)]
    item.update(seq=record.seq, pid=record.pid, trace_id=record.trace_id, span_id=record.span_id)
    return item


def state_history(
    reader: Reader,
    object: str,
    pid: int | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    run: str | None,
) -> dict[str, Any]:
    run_id = reader.run(run)
    db = reader.db()
    start_ns, end_ns = time_range(since, until)
    with reader.deadline():
        records = db.state_history(object, pid=pid, run=run_id)
    if not records:
        raise _unknown(reader, object, run_id)
    chosen = [
        r
        for r in records
        if (start_ns is None or r.time_ns >= start_ns) and (end_ns is None or r.time_ns < end_ns)
    ]
    wanted = limit or DEFAULT_RECORDS
    shown = chosen[-wanted:]  # the latest: what led up to now, or to the end of the range
    data: dict[str, Any] = {
        "run": run_id or "all",
        "object": object,
        "class": records[-1].class_name,
        "pids": sorted({r.pid for r in records}),
        "first": iso(records[0].time_ns),
        "last": iso(records[-1].time_ns),
        "records": [_record(r) for r in shown],
        "order": "oldest first; the latest records of the range are shown",
    }
    if len(chosen) > len(shown):
        left_out(
            data,
            "records",
            len(chosen),
            f"earlier ones: the same call with until='{iso(shown[0].time_ns)}'; "
            "state_at gives the whole state at an instant",
        )
    return data


def state_at(
    reader: Reader,
    object: str,
    time: str,
    pid: int | None,
    run: str | None,
) -> dict[str, Any]:
    run_id = reader.run(run)
    db = reader.db()
    at_ns = instant(time, "time")
    with reader.deadline():
        state = db.state_at(object, at_ns, pid=pid, run=run_id)
    if state is None:
        first = db.state_history(object, pid=pid, run=run_id)
        if not first:
            raise _unknown(reader, object, run_id)
        return {
            "run": run_id or "all",
            "object": object,
            "at": iso(at_ns),
            "state": None,
            "note": f"nothing of it was recorded by then; its first record is at "
            f"{iso(first[0].time_ns)}",
        }
    return {
        "run": run_id or "all",
        "object": object,
        "class": state.class_name,
        "at": iso(state.at_ns),
        "state": {k: clip(v) for k, v in list(state.fields.items())[:100]},
        "pid": state.pid,
        "from_snapshot_at": iso(state.snapshot_ns),
        "snapshot_reason": state.snapshot_reason,
        "changes_applied": state.changes_applied,
        "last_change": iso(state.last_change_ns),
        "complete": state.complete,
        "notes": [clip(n) for n in state.notes[:10]],
    }


TOOLS = (
    Tool(
        "state_history",
        "How a traced object's state changed over time: snapshots (the whole state), "
        "changes (method, field: [old, new]) and state-machine transitions, with the "
        "process, trace and span of each. Use it to see what happened to an object before "
        "something went wrong; state_at gives its whole state at one instant. Shows the "
        f"latest {DEFAULT_RECORDS} records of the range by default (at most {MAX_RECORDS}).",
        state_history,
        (_OBJECT, _PID, SINCE, UNTIL, limit_param(DEFAULT_RECORDS, MAX_RECORDS, "records"), RUN),
    ),
    Tool(
        "state_at",
        "A traced object's whole state (field -> value) at one instant, rebuilt from the "
        "last snapshot before it and the changes since; says whether it is complete. Use "
        "it to answer 'what was X when Y happened' with a time from another tool's result.",
        state_at,
        (
            _OBJECT,
            Param(
                "time",
                "string",
                "the instant: ISO 8601 (2026-12-01T10:00:05.25Z; without an offset it is "
                "local time) or a time of day such as 10:00:05 (today, local)",
                required=True,
            ),
            _PID,
            RUN,
        ),
    ),
)
