"""The ``procscope`` command line.

Each command lives in its own module with ``add_parser(subparsers)``, which registers it
and sets ``func`` to a handler taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from . import _run

TYPE_CHECKING = False  # (not typing's: procscope run imports this module)
if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # An argument echoed back may hold control characters or undecodable bytes.
        message = "".join(
            ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
            for ch in " ".join(message.split())
        )
        sys.stderr.write(f"procscope: {message} (see 'procscope --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser(only_run: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="procscope",
        description="Record and query how a concurrent Python program's processes, "
        "threads, tasks, messages and object states behave.",
    )
    parser.add_argument("--version", action="version", version=f"procscope {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    _run.add_parser(subparsers)
    if only_run:
        return parser
    # The read commands (SQLite, the DB's queries, output formatting) are imported only
    # when one may be run: ``procscope run`` execs the program at once, and what it
    # imports here delays every traced program's start.
    from . import _export, _messages, _processes, _runs, _state, _timeline, _traces

    for module in (_runs, _traces, _processes, _messages, _timeline, _state, _export):
        module.add_parser(subparsers)
    from . import _ui

    _ui.add_parser(subparsers)
    from . import _dump

    _dump.add_parser(subparsers)
    from . import _mcp

    _mcp.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    only_run = bool(words) and words[0] in ("run", "demo")
    parser = build_parser(only_run=only_run)
    if only_run:
        args = parser.parse_args(argv)
    else:
        from ._output import safe_stdout

        with safe_stdout():  # --help holds glyphs (✗) that some encodings cannot print
            args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `procscope traces | head`: the reader went away; that is not an error of ours.
        return EXIT_OK
    except Exception as exc:
        # A bug of ours: one line, not a traceback (the test suite wants the traceback).
        from procscope.core.guard import raise_internal_errors

        if raise_internal_errors():
            raise
        sys.stderr.write(
            f"procscope {args.command}: internal error, please report it: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())!r}\n"
        )
        return EXIT_INTERNAL


def entry() -> None:
    """The console script."""
    sys.exit(main())
