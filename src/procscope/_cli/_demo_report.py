"""What ``procscope demo`` prints after the example has run: the read commands, as a
user would type them, on the DB the example recorded into, then more to paste."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import redirect_stdout
from io import StringIO

from ._invocation import activate_hint, procscope_command
from ._output import as_terminal, format_time, safe_stdout, stdout_is_terminal


def _command(args: list[str]) -> tuple[int, str]:
    from . import main

    buffer = StringIO()
    # Laid out for where it is shown: cut to the terminal's width on a terminal only.
    with as_terminal(stdout_is_terminal()), redirect_stdout(buffer):
        status = main(args)
    return status, buffer.getvalue()


def _show(procscope: str, args: list[str]) -> int:
    print(f"$ {procscope} {shlex.join(args)}")
    status, output = _command(args)
    print(output.rstrip("\n"))
    print()
    sys.stdout.flush()
    return status


def _last_change(db: str) -> str | None:
    """The time of day (HH:MM:SS, local) of the ledger's last recorded change."""
    status, output = _command(["state", "ledger", "--db", db, "--json"])
    if status != 0:
        return None
    history = json.loads(output)["history"]
    return format_time(history[-1]["time_ns"], date=False)[:8] if history else None


def print_demo_report(db: str) -> int:
    """Run each read command on ``db``, printing it and its output; 0 if all succeeded."""
    with safe_stdout():
        return _report(db, procscope_command())


def _report(db: str, procscope: str) -> int:
    status, listing = _command(["traces", "--db", db, "--json"])
    if status != 0:
        return status
    traces = json.loads(listing)["traces"]
    statuses = [
        _show(procscope, ["processes", "--db", db]),
        _show(procscope, ["messages", "--db", db, "--queue", "orders"]),
        _show(procscope, ["state", "ledger", "--db", db]),
        _show(procscope, ["traces", "--db", db]),
    ]
    if traces:
        # The pipeline's trace: the one with the most spans (the newest is the one-span
        # record of how the program ended).
        largest = max(traces, key=lambda t: t.get("span_count") or 0)
        statuses.append(_show(procscope, ["show", largest["trace_id"], "--db", db]))
    db_word = shlex.quote(db)
    print("Ask more questions of the same recording, for example:")
    print(f"  {procscope} messages --db {db_word} --to ledger")
    moment = _last_change(db)
    if moment:
        print(f"  {procscope} state ledger --db {db_word} --at {moment}")
    print(f"  {procscope} traces --db {db_word} --errors")
    hint = activate_hint(procscope)
    if hint:
        print(hint)
    return max(statuses)
