"""``procscope state NAME [--at TIME]``: a traced object's history, or its state at a time.

Without ``--at``: the timeline, one line per recorded moment (time, the method, trigger or
snapshot, and what changed). With ``--at``: each field and its value at that instant,
rebuilt from the last snapshot before it and the changes since. TIME follows the
contract: ISO 8601 with or without a UTC offset (local time when without), or a time of
day such as 12:03:05 (today, local).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from procscope.exporters.tracedb import _state as _tracedb_state

from ._output import (
    EXIT_OK,
    add_db_arguments,
    db_command,
    fail,
    format_time,
    iso_time,
    moment_argument,
    pid_argument,
    print_json,
    render_table,
    typed_value,
)

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

NOT_CAPTURED = _tracedb_state.NOT_CAPTURED
_what = _tracedb_state.describe  # what one record changed: "field: old → new; ..."
_MAX_KNOWN = 10  # object names listed when NAME matches none


def _type_values(data: dict[str, Any]) -> None:
    """A record's values in JSON as what they were: 5, not "5" (see typed_value)."""
    for key in ("values", "old_values"):
        if data.get(key) is not None:
            data[key] = [typed_value(v) for v in data[key]]
    data["details"] = [
        [path, typed_value(old), typed_value(new)] for path, old, new in data.get("details") or []
    ]


def _unknown(db: TraceDB, name: str, run: str | None = None) -> int:
    known = db.state_objects(run=run)
    if not known:
        return fail("state", f"no object state recorded in {db.path}")
    listed = ", ".join(known[:_MAX_KNOWN]) + (", ..." if len(known) > _MAX_KNOWN else "")
    return fail("state", f"no state recorded for {name!r} in {db.path}; recorded: {listed}")


def _history(args: argparse.Namespace, db: TraceDB) -> int:
    records = db.state_history(args.name, args.pid, run=args.run_id)
    if not records:
        return _unknown(db, args.name, args.run_id)
    if args.json:
        rows = []
        for record in records:
            data = record.to_dict()
            data["time"] = iso_time(record.time_ns)
            _type_values(data)
            rows.append(data)
        return print_json({"object": args.name, "history": rows})
    pids = {r.pid for r in records}
    headers = ["TIME", "METHOD"] + (["PID"] if len(pids) > 1 else []) + ["WHAT CHANGED"]
    rows_text = []
    for record in records:
        method = record.method if record.kind != "snapshot" else "-"
        row = [format_time(record.time_ns), method or "-"]
        if len(pids) > 1:
            row.append(str(record.pid))
        row.append(_what(record))
        rows_text.append(row)
    print(f"state history of {args.name} ({len(records)} records)")
    print(render_table(headers, rows_text, shrink=[len(headers) - 1]))
    return EXIT_OK


def _state_at(args: argparse.Namespace, db: TraceDB) -> int:
    state = db.state_at(args.name, args.at, args.pid, run=args.run_id)
    if state is None:
        history = db.state_history(args.name, run=args.run_id)
        if not history:
            return _unknown(db, args.name, args.run_id)
        first = history[0]
        return fail(
            "state",
            f"nothing recorded for {args.name!r} at or before {format_time(args.at)}; "
            f"its first record is at {format_time(first.time_ns)}",
        )
    if args.json:
        data = state.to_dict()
        data["fields"] = {k: typed_value(v) for k, v in state.fields.items()}
        data["at"] = iso_time(state.at_ns)
        data["snapshot_time"] = iso_time(state.snapshot_ns)
        data["last_change_time"] = iso_time(state.last_change_ns)
        return print_json(data)
    source = (
        f"snapshot at {format_time(state.snapshot_ns)} + {state.changes_applied} change(s)"
        if state.snapshot_ns is not None
        else f"{state.changes_applied} change(s), no snapshot"
    )
    print(f"state of {args.name} at {format_time(state.at_ns)} ({source})")
    for note in state.notes:
        print(f"note: {note}")
    rows = [[k, NOT_CAPTURED if v is None else v] for k, v in state.fields.items()]
    print(render_table(["FIELD", "VALUE"], rows, shrink=[1]))
    return EXIT_OK


@db_command("state")
def cmd_state(args: argparse.Namespace, db: TraceDB) -> int:
    if args.at is None:
        return _history(args, db)
    return _state_at(args, db)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "state",
        help="the state history of a traced object, or its state at a time",
        description="Without --at: every recorded snapshot, change and transition of the "
        "object NAME. With --at TIME: its fields and values at that instant. TIME is ISO "
        "8601 with or without a UTC offset (local time when without), or a time of day "
        "such as 12:03:05 (today, local).",
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help="the object's name (procscope.name, trace_state(name=...), or Class#n)",
    )
    parser.add_argument(
        "--at",
        type=moment_argument,
        metavar="TIME",
        help="the instant to rebuild, to the precision given (12:03:05 is up to 12:03:05.999)",
    )
    parser.add_argument(
        "--pid",
        type=pid_argument,
        help="only this process's records (a forked child keeps its parent's object names)",
    )
    add_db_arguments(parser)
    parser.set_defaults(func=cmd_state)
