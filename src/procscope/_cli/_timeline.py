"""``procscope timeline WHO``: everything that happened to one process, thread or task.

WHO is a process (its name, pid, or ``name:pid``, as ``processes`` and ``messages`` print
it), or a thread or task in it (``name:pid/Thread-2``, ``name:pid/Task-6``). One line per
entry, oldest first: who started it, messages in and out (queue, content, the other
end), state changes, the spans it ran, exceptions with their stack, and how it ended.
``--around TIME`` keeps the entries within 2 s of TIME, ``--last N`` the last N.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._output import (
    EXIT_OK,
    add_db_arguments,
    db_command,
    fail,
    format_duration,
    format_time,
    iso_time,
    moment_argument,
    one_line,
    positive_int_argument,
    print_json,
    render_table,
    typed_value,
)

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

ERROR_MARK = "✗"
_STACK_LINES = 12  # the last lines of a stack shown under an exception (--json has all)
_OWN_FRAMES = "/procscope/instrumentation/"


def _stack_tail(stack: str) -> list[str]:
    """The stack's last lines, without procscope's own frames (the wrapper that watches a
    process's target for its exception: a frame and its source line)."""
    lines: list[str] = []
    skip_next = False
    for line in stack.rstrip().splitlines():
        if skip_next:
            skip_next = False
            if not line.lstrip().startswith("File "):
                continue
        if line.lstrip().startswith("File ") and _OWN_FRAMES in line.replace("\\", "/"):
            skip_next = True
            continue
        if line.strip():
            lines.append(line)
    return lines[-_STACK_LINES:]


@db_command("timeline")
def cmd_timeline(args: argparse.Namespace, db: TraceDB) -> int:
    from procscope.exporters.tracedb import UnknownActorError

    try:
        who = db.actor(args.who, run=args.run_id)
        # One more than --last: whether earlier entries were left out, without reading
        # them all (the query reads only the spans the last entries can be in).
        last = args.last + 1 if args.last else None
        found = db.timeline(args.who, run=args.run_id, around=args.around, last=last)
    except UnknownActorError as exc:
        return fail("timeline", str(exc))
    entries = found[-args.last :] if args.last else found
    more_before = len(found) > len(entries)
    if args.json:
        rows = []
        for entry in entries:
            data = entry.to_dict()
            data["time"] = iso_time(entry.time_ns)
            data["content"] = typed_value(data.get("content"))  # 5, not "5"
            rows.append(data)
        return print_json(
            {
                "actor": who,
                "run": args.run_id,
                "entries": rows,
                "earlier_entries_left_out": more_before,
            }
        )
    print(f"timeline of {who}" + (f" (run {args.run_id})" if args.run_id else ""))
    if not entries:
        print("nothing recorded" + (" around that time" if args.around is not None else ""))
        return EXIT_OK
    same_day = len({format_time(e.time_ns)[:10] for e in entries}) <= 1
    rows_text: list[list[str]] = []
    for entry in entries:
        mark = f"{ERROR_MARK} " if entry.error else ""
        took = f" ({format_duration(entry.duration_ns)})" if entry.duration_ns else ""
        actor = "" if entry.actor == who else entry.actor
        rows_text.append(
            [
                format_time(entry.time_ns, date=not same_day),
                entry.kind,
                actor,
                mark + entry.text + took,
            ]
        )
        if entry.stack:
            rows_text.extend(
                ["", "", "", "  " + one_line(line)] for line in _stack_tail(entry.stack)
            )
    print(render_table(["TIME", "WHAT", "BY", "DETAILS"], rows_text, shrink=(3, 2)))
    if more_before:
        print(
            f"(the last {len(entries):,} entries shown, earlier ones left out; --last N for more)"
        )
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "timeline",
        help="everything that happened to one process, thread or task, in time order",
        description="Everything that happened to WHO, oldest first: who started it, "
        "messages in and out (queue, content, the other end), state changes, spans it ran, "
        "exceptions with their stack, and how it ended. WHO is a process (name, pid or "
        "name:pid, as 'processes' prints it) or a thread or task in it (name:pid/Thread-2, "
        "name:pid/Task-6).",
    )
    parser.add_argument("who", metavar="WHO", help="name, pid, name:pid, or name:pid/THREAD|TASK")
    parser.add_argument(
        "--around",
        type=moment_argument,
        metavar="TIME",
        help="only entries within 2 s of TIME (ISO 8601, or a time of day such as 12:03:05)",
    )
    parser.add_argument(
        "--last", type=positive_int_argument, metavar="N", help="only the last N entries"
    )
    add_db_arguments(parser)
    parser.set_defaults(func=cmd_timeline)
