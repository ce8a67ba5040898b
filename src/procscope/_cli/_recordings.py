"""``procscope traces --recordings``: the flight recorder's dumps, with their reasons.

A dump is one trace whose root span is ``flight recording`` (docs/flight-recorder.md);
its attributes say why it was written, how many records it holds, and how many were
overwritten or older than the window before it.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from ._output import EXIT_OK, format_time, iso_time, print_json, render_table

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

ROOT_NAME = "flight recording"


def _row(span: Any) -> dict[str, Any]:
    attributes = span.attributes
    return {
        "trace_id": span.trace_id,
        "reason": attributes.get("procscope.flight.reason"),
        "pid": attributes.get("process.pid", span.pid),
        "process_name": span.process_name,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "start": iso_time(span.start_ns),
        "records": attributes.get("procscope.flight.records"),
        "overwritten": attributes.get("procscope.flight.overwritten"),
        "expired": attributes.get("procscope.flight.expired"),
    }


def list_recordings(args: argparse.Namespace, db: TraceDB) -> int:
    """The dumps that match the traces command's time and run filters, newest first."""
    spans = db.spans(name=ROOT_NAME, start_ns=args.since, end_ns=args.until, run=args.run_id)
    rows = sorted((_row(s) for s in spans), key=lambda r: r["end_ns"], reverse=True)
    rows = rows[: args.limit]
    if args.json:
        return print_json({"recordings": rows})
    if not rows:
        print(f"no flight recordings in {db.path}")
        return EXIT_OK
    today = format_time(time.time_ns())[:10]
    with_date = any(format_time(r["start_ns"])[:10] != today for r in rows)
    table = [
        [
            r["trace_id"],
            format_time(r["end_ns"], date=with_date),
            f"{r['process_name'] or ''}:{r['pid']}" if r["process_name"] else str(r["pid"]),
            r["records"] if r["records"] is not None else "",
            r["reason"] or "",
        ]
        for r in rows
    ]
    print(render_table(["TRACE ID", "WRITTEN", "PROCESS", "RECORDS", "REASON"], table,
                       right=(3,), shrink=(4, 2)))
    return EXIT_OK
