"""``procscope traces --recordings``: the flight recorder's dumps, with their reasons.

A dump is one trace whose root span is ``flight recording`` (docs/flight-recorder.md);
its attributes say why it was written, how many records it holds, and how many were
overwritten or older than the window before it. A large dump stored as records and not
yet all made into spans (``flight_staged``) is listed too, marked ``staged``.
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
        "staged": False,
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
    rows = [_row(s) for s in spans]
    # A recording whose records are stored but whose spans are not all (its process
    # died making them, and nobody finished yet): listed, marked, its root maybe absent.
    by_trace = {r["trace_id"]: r for r in rows}
    for staged in db.staged_recordings(run=args.run_id):
        at = staged["staged_ns"]
        if (args.since is not None and at < args.since) or (
                args.until is not None and at > args.until):
            continue
        row = by_trace.get(staged["trace_id"])
        if row is None:
            row = by_trace[staged["trace_id"]] = {
                "trace_id": staged["trace_id"], "reason": staged["reason"],
                "pid": staged["pid"], "process_name": staged["process_name"],
                "start_ns": at, "end_ns": at, "start": iso_time(at),
                "records": staged["records"], "overwritten": None, "expired": None}
            rows.append(row)
        row["staged"] = True
    rows.sort(key=lambda r: r["end_ns"], reverse=True)
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
            (r["reason"] or "") + (" (records stored, not yet all spans)" if r["staged"]
                                    else ""),
        ]
        for r in rows
    ]
    print(render_table(["TRACE ID", "WRITTEN", "PROCESS", "RECORDS", "REASON"], table,
                       right=(3,), shrink=(4, 2)))
    return EXIT_OK
