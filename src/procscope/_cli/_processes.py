"""``procscope processes``: the process tree, from the lifecycle instrumentor's spans.

One row per process: pid, parent pid, name (indented under its parent), start method,
start, lifetime, and how it ended (exit code, or the signal that killed it). A process
that failed (unhandled exception, non-zero exit code, a signal) is marked ✗ and its
reason shown. ``--json`` gives the same rows, each with its depth in the tree.
"""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING, Any

from ._output import (
    EXIT_OK,
    add_db_arguments,
    db_command,
    format_duration,
    format_time,
    iso_time,
    print_json,
    render_table,
)

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

ERROR_MARK = "✗"
# The table helper folds runs of spaces (cells are one line each); the tree's indentation
# is drawn with this stand-in and turned back into spaces once the table is laid out.
_PAD = "\ue000"  # private use: never in a name, and not a control character (escaped)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def how_it_ended(record: Any) -> str:
    if record.exit_signal is not None:
        return f"{signal_name(int(record.exit_signal))} ({record.exit_signal})"
    if record.exit_code is not None:
        return f"exit {record.exit_code}"
    if record.kind == "program":
        return ""
    return "?"


def _tree_names(records: list[Any]) -> list[str]:
    """Each name with the ├─ └─ │ prefix of its place in the tree (records in tree order)."""
    names = []
    # For each depth, whether a later sibling follows at that depth (draws │).
    open_levels: list[bool] = []
    for index, record in enumerate(records):
        depth = record.depth
        has_next_sibling = False
        for later in records[index + 1 :]:
            if later.depth < depth:
                break
            if later.depth == depth:
                has_next_sibling = True
                break
        del open_levels[depth:]
        prefix = "".join("│" + _PAD * 2 if level else _PAD * 3 for level in open_levels[1:])
        if depth > 0:
            prefix += "├─ " if has_next_sibling else "└─ "
        open_levels.append(has_next_sibling)
        mark = ERROR_MARK + " " if record.error else ""
        names.append(prefix + mark + str(record.name))
    return names


def _json_row(record: Any) -> dict[str, Any]:
    data = record.to_dict()
    data["start"] = iso_time(record.start_ns)
    return data


@db_command("processes")
def cmd_processes(args: argparse.Namespace, db: TraceDB) -> int:
    records = db.processes(run=args.run_id)
    if args.json:
        return print_json([_json_row(r) for r in records])
    if not records:
        print("no processes recorded (the lifecycle instrumentor records them)")
        return EXIT_OK
    names = _tree_names(records)
    days = {format_time(r.start_ns)[:10] for r in records if r.start_ns is not None}
    same_day = len(days) <= 1
    rows = [
        [
            name,
            "" if r.pid is None else str(r.pid),
            "" if r.parent_pid is None else str(r.parent_pid),
            r.start_method or "",
            format_time(r.start_ns, date=not same_day),
            format_duration(r.duration_ns),
            how_it_ended(r),
            r.error_message or "",
        ]
        for name, r in zip(names, records)
    ]
    table = render_table(
        ["PROCESS", "PID", "PARENT", "METHOD", "START", "LIFETIME", "END", "ERROR"],
        rows,
        right=(1, 2, 5),
        shrink=(7, 0, 4),
    )
    print(table.replace(_PAD, " "))
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "processes",
        help="the process tree: pid, parent, name, start method, lifetime, how it ended",
        description="Show every recorded process under its parent: pid, parent pid, name, "
        "start method, start time, lifetime, and its exit code or the signal that killed it. "
        f"Failed processes are marked {ERROR_MARK}.",
    )
    add_db_arguments(parser)
    parser.set_defaults(func=cmd_processes)
