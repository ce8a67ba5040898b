"""What ``procscope demo`` prints after the example has run: the read commands, as a
user would type them, on the DB the example recorded into."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import redirect_stdout
from io import StringIO


def _command(args: list[str]) -> tuple[int, str]:
    from . import main

    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main(args)
    return status, buffer.getvalue()


def _show(args: list[str]) -> int:
    print(f"$ procscope {shlex.join(args)}")
    status, output = _command(args)
    print(output.rstrip("\n"))
    print()
    sys.stdout.flush()
    return status


def print_demo_report(db: str) -> int:
    """Run each read command on ``db``, printing it and its output; 0 if all succeeded."""
    status, listing = _command(["traces", "--db", db, "--json"])
    if status != 0:
        return status
    traces = json.loads(listing)["traces"]
    statuses = [
        _show(["processes", "--db", db]),
        _show(["messages", "--db", db, "--queue", "orders"]),
        _show(["state", "ledger", "--db", db]),
        _show(["traces", "--db", db]),
    ]
    if traces:
        # The pipeline's trace: the one with the most spans (the newest is the one-span
        # record of how the program ended).
        largest = max(traces, key=lambda t: t.get("span_count") or 0)
        statuses.append(_show(["show", largest["trace_id"], "--db", db]))
    print("Ask more questions of the same recording, for example:")
    print(f"  procscope messages --db {shlex.quote(db)} --to ledger")
    print(f"  procscope state ledger --db {shlex.quote(db)} --at HH:MM:SS")
    return max(statuses)
