"""``procscope messages``: messages through queues and pipes, from sender to receiver.

One row per recorded (sampled) message, oldest first: when it was sent, the queue or pipe,
the sending and receiving process and thread, how long it waited in the queue, its size
when known, and its trace. ``--from``/``--to`` match a pid, a process name, ``name:pid``
(as the table prints it) or a thread name (globs allowed), ``--queue`` a queue's name. A
message not received (yet, or in a process whose spans never reached the DB) shows ``-``
as its receiver. The table shows trace id prefixes, which ``procscope show`` accepts;
``--json`` has everything in full.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from ._output import (
    EXIT_OK,
    add_db_arguments,
    db_command,
    format_duration,
    format_time,
    iso_time,
    positive_int_argument,
    print_json,
    render_table,
    time_argument,
    typed_value,
)

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

ERROR_MARK = "✗"
DEFAULT_LIMIT = 100
# Trace ids are cut to a prefix in the table (``procscope show`` takes a unique prefix);
# --json has them whole.
TRACE_PREFIX = 12


def _json_row(record: Any) -> dict[str, Any]:
    data: dict[str, Any] = record.to_dict()
    data["sent"] = iso_time(record.sent_ns)
    data["received"] = iso_time(record.received_ns)
    data["content"] = typed_value(data.get("content"))
    return data


def _who(end: Any) -> str:
    if end is None:
        return "-"
    mark = f"{ERROR_MARK} " if end.error else ""
    return mark + end.who()


@db_command("messages")
def cmd_messages(args: argparse.Namespace, db: TraceDB) -> int:
    records = db.messages(
        queue=args.queue,
        sender=args.sender,
        receiver=args.receiver,
        start_ns=args.since,
        end_ns=args.until,
        limit=args.limit + 1,  # one more, to know whether there are more than shown
        newest=True,
        run=args.run_id,
    )
    more = len(records) > args.limit
    shown = records[-args.limit :]
    if args.json:
        return print_json([_json_row(r) for r in shown])
    if not shown:
        filtered = any(
            v is not None for v in (args.queue, args.sender, args.receiver, args.since, args.until)
        )
        print("no messages match" if filtered else f"no messages in {db.path}")
        return EXIT_OK
    today = format_time(time.time_ns())[:10]
    with_date = any(format_time(r.sent_ns)[:10] != today for r in shown)
    rows = [
        [
            format_time(r.sent_ns, date=with_date),
            r.queue,
            _who(r.sender),
            _who(r.receiver),
            format_duration(r.wait_ns) if r.wait_ns is not None else "",
            r.size if r.size is not None else "",
            r.trace_id[:TRACE_PREFIX],
        ]
        for r in shown
    ]
    print(
        render_table(
            ["SENT", "QUEUE", "FROM", "TO", "WAITED", "SIZE", "TRACE"],
            rows,
            right=(4, 5),
        )
    )
    if more:
        print(f"(the {len(shown)} newest shown; --limit N for more)")
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "messages",
        help="messages: queue, sender, receiver, times, size, trace",
        description="List the recorded messages through queues and pipes, oldest first. "
        "NAME in --from/--to is a pid, a process name (MainProcess, SpawnProcess-1), both "
        "as the FROM and TO columns print them (MainProcess:1234), or a thread name; globs "
        "such as 'Spawn*' are allowed, in --queue too. TIME is ISO 8601 "
        "(with or without a UTC offset; local time when without) or a time of day such as "
        "12:03:05 (today, local).",
    )
    add_db_arguments(parser)
    parser.add_argument(
        "--from", dest="sender", metavar="NAME", help="sent by this process or thread"
    )
    parser.add_argument(
        "--to", dest="receiver", metavar="NAME", help="received by this process or thread"
    )
    parser.add_argument("--queue", metavar="NAME", help="through this queue or pipe")
    parser.add_argument("--since", type=time_argument, metavar="TIME", help="sent at or after")
    parser.add_argument("--until", type=time_argument, metavar="TIME", help="sent before")
    parser.add_argument(
        "--limit",
        type=positive_int_argument,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"the N newest messages ({DEFAULT_LIMIT})",
    )
    parser.set_defaults(func=cmd_messages)
