"""``procscope runs``: the recorded runs, oldest first, the latest marked.

One row per run (a ``procscope run``, or a program that called ``setup()``, with all its
children): id, command, start, duration, processes, how its first process ended, error
spans, and whether the recording is complete. Every other read command reads the latest
run unless given ``--run ID`` (a unique start of an id is enough) or ``--run all``.
"""

from __future__ import annotations

import argparse
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
from ._processes import signal_name

if TYPE_CHECKING:
    from procscope.exporters.tracedb import Run, TraceDB


def exit_text(run: Run) -> str:
    """``0``, ``1``, ``SIGKILL``, or ``?`` when the run's first process recorded no end."""
    if run.exit_signal:
        return signal_name(run.exit_signal)
    return "?" if run.exit_code is None else str(run.exit_code)


@db_command("runs")
def cmd_runs(args: argparse.Namespace, db: TraceDB) -> int:
    runs = db.runs()
    latest = runs[-1].run_id if runs else None
    if args.json:
        rows = []
        for run in runs:
            data = run.to_dict()
            data["start"] = iso_time(run.start_ns)
            data["latest"] = run.run_id == latest
            rows.append(data)
        return print_json({"runs": rows})
    if not runs:
        print(f"no runs in {db.path}")
        return EXIT_OK
    same_day = len({format_time(r.start_ns)[:10] for r in runs}) <= 1
    rows_text = [
        [
            run.run_id + (" *" if run.run_id == latest else ""),
            run.command or "?",
            format_time(run.start_ns, date=not same_day),
            format_duration(run.duration_ns),
            run.processes,
            exit_text(run),
            run.errors or "",
            "yes" if run.complete else f"no, {run.lost:,} lost",
        ]
        for run in runs
    ]
    print(
        render_table(
            ["RUN", "COMMAND", "START", "DURATION", "PROCS", "EXIT", "ERRORS", "COMPLETE"],
            rows_text,
            right=(3, 4, 6),
            shrink=(1,),
        )
    )
    print("(* the latest run, which every read command shows unless given --run ID or all)")
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="the recorded runs: id, command, start, duration, processes, exit, errors",
        description="List the runs recorded in the DB, oldest first: id, command, start, "
        "duration, number of processes, how the first process ended, error spans, and "
        "whether the recording is complete. Other read commands show the latest run "
        "unless given --run ID (a unique start of an id is enough) or --run all.",
    )
    add_db_arguments(parser, run=False)
    parser.set_defaults(func=cmd_runs)
