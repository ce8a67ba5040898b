"""``procscope dump PID``: make a running program write out its flight recorder's window.

Sends the process SIGUSR2, which procscope handles where the program left that signal at
its default (docs/flight-recorder.md). A process without procscope's handler is never
signalled: SIGUSR2's default action would kill it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._output import EXIT_OK, fail, pid_argument


def cmd_dump(args: argparse.Namespace) -> int:
    from procscope.core import _flight_signal

    why_not = _flight_signal.ask(args.pid)
    _flight_signal.sweep()  # (markers left by processes that are gone)
    if why_not is not None:
        return fail("dump", f"cannot ask process {args.pid} to dump: {why_not}")
    print(f"asked process {args.pid} to write out its flight recorder (SIGUSR2); "
          "see procscope traces --recordings")
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dump",
        help="make a running program write out its flight recorder's window",
        description="Ask a running process recorded by procscope (sample_rate < 1, flight "
        "recorder on) to write the last seconds of its unsampled work into the trace DB "
        "now, by sending it SIGUSR2. Processes without procscope's handler are never "
        "signalled.",
    )
    parser.add_argument("pid", type=pid_argument, metavar="PID")
    parser.set_defaults(func=cmd_dump)
