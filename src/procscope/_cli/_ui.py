"""``procscope ui [--db P] [--run ID] [--port N] [--no-browser]``: serve the timeline viewer.

It listens on 127.0.0.1 only (port 0, the default, takes any free port), prints the URL,
and opens the browser unless ``--no-browser`` or there is no display. Ctrl-C stops it
(exit status 0). An unreadable DB, an unknown run or a port in use: exit status 2 with
one line on stderr. docs/viewer.md.
"""

from __future__ import annotations

import argparse
import sqlite3
from typing import Any

from ._output import EXIT_OK, EXIT_USAGE, db_path, fail


def _default_run(viewer: Any, given: str | None) -> str | None:
    """The run the page opens on: ``--run``'s (a unique start of an id is enough), else
    the latest; None for ``--run all`` or a DB that predates runs."""
    from procscope.exporters.tracedb import TraceDB

    if given is not None and given.strip().lower() == "all":
        return None
    with TraceDB(viewer.path) as db:
        if given is None:
            latest = getattr(db, "latest_run_id", None)
            return latest() if latest is not None else None
        resolve = getattr(db, "resolve_run", None)
        if resolve is None:
            raise ValueError(f"this trace DB has no runs; no run {given!r}")
        return str(resolve(given))


def cmd_ui(args: argparse.Namespace) -> int:
    from procscope._ui import Viewer, ViewerServer, can_open_browser, open_browser
    from procscope.exporters.tracedb import TraceDBError

    path = db_path(args.db)
    try:
        viewer = Viewer(path)
        viewer.default_run = _default_run(viewer, args.run)
    except TraceDBError as exc:
        return fail("ui", f"cannot read trace DB {exc}")
    except (sqlite3.Error, OSError) as exc:
        return fail("ui", f"cannot read trace DB {path}: {exc}")
    except ValueError as exc:  # an unknown or ambiguous run
        return fail("ui", str(exc))
    try:
        server = ViewerServer(viewer, args.port)
    except OSError as exc:
        viewer.close()
        return fail("ui", f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}")
    print(f"procscope ui: serving {path} at {server.url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser and can_open_browser():
        open_browser(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        viewer.close()
    return EXIT_OK


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="serve the timeline viewer on 127.0.0.1 and print its URL",
        description="Serve a timeline of the recorded run in the browser: a lane per "
        "process, thread and task, messages as arrows, state changes, a time cursor. "
        "Listens on 127.0.0.1 only; read-only. Ctrl-C stops it.",
    )
    parser.add_argument(
        "--db", metavar="PATH", help="trace DB file (default: $PROCSCOPE_DB or ./procscope.db)"
    )
    parser.add_argument(
        "--run",
        metavar="ID|all",
        help="the run to open (an id from 'procscope runs' or a unique start of one, or "
        "all; default: the latest run); the page has a run selector",
    )
    parser.add_argument(
        "--port", type=_port, default=0, help="port on 127.0.0.1 (default 0: any free port)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the URL only; do not open a browser"
    )
    parser.set_defaults(func=cmd_ui)


__all__ = ["EXIT_USAGE", "add_parser", "cmd_ui"]
