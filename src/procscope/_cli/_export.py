"""``procscope export``: write a recorded run as a Perfetto trace or as OTLP JSON.

``--format perfetto`` opens in ui.perfetto.dev, ``--format otlp-json`` in Jaeger's UI
("JSON File" upload) and otel-tui (docs/export.md). One run, the latest unless ``--run``
names another (``--run all``: every span of the DB). The file is written whole or not at
all (a temporary file renamed over FILE). A bad format, a FILE that cannot be written or
a DB that cannot be read: exit status 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from ._output import EXIT_OK, add_db_arguments, db_command, fail, print_json

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

FORMATS = ("perfetto", "otlp-json")


def _unwritable(path: str, db_path: str) -> str | None:
    """Why FILE cannot be written, checked before the DB is read; None when it can."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        return "it is a directory"
    # The export replaces FILE: never the trace DB itself, nor the files SQLite keeps
    # beside it.
    for own in (db_path, db_path + "-wal", db_path + "-shm", db_path + "-journal"):
        if target == own or (os.path.exists(target) and _same_file(target, own)):
            return "it is the trace DB's own file"
    if not os.path.isdir(folder):
        return f"no such directory {folder}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create files in {folder}"
    return None


def _same_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


@db_command("export")
def cmd_export(args: argparse.Namespace, db: TraceDB) -> int:
    from procscope._export import export

    reason = _unwritable(args.output, db.path)
    if reason is not None:
        return fail("export", f"cannot write {args.output}: {reason}")
    where: str = ""
    params: list[Any] = []
    if args.run_id is not None:  # the latest run by default, every run with --run all
        from procscope.exporters.tracedb._runs import resolve

        where, params = resolve(db.conn, args.run_id).spans("s")
    names = None
    if args.format == "perfetto":
        from procscope.exporters.tracedb._actors import process_names

        # Each process by its one name, as every command shows it.
        names = process_names(db.processes(run=args.run_id))
    try:
        counts = export(db, args.format, args.output, where, params, names)
    except OSError as exc:
        return fail("export", f"cannot write {args.output}: {exc.strerror or exc}")
    if args.json:
        return print_json({"format": args.format, "file": os.path.abspath(args.output), **counts})
    print(f"wrote {args.output} ({_summary(args.format, counts)})")
    return EXIT_OK


def _summary(fmt: str, counts: dict[str, Any]) -> str:
    if fmt == "perfetto":
        return (
            f"{counts['slices']} slices, {counts['flows']} flows, "
            f"{counts['counters']} counter values, {counts['instants']} instants; "
            "open it in https://ui.perfetto.dev"
        )
    return f"{counts['spans']} spans as OTLP JSON"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run as a Perfetto trace or as OTLP JSON",
        description="Write the recorded spans as a Perfetto trace (a track per process, "
        "thread and asyncio task, slices for spans, arrows for messages, counters for "
        "numeric state fields) or as OTLP JSON (for Jaeger's UI upload and otel-tui).",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="perfetto or otlp-json")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    add_db_arguments(parser)
    parser.set_defaults(func=cmd_export)
