"""The one line ``procscope run`` leaves on a terminal when the program ends: where it
recorded, and the command that shows it.

``procscope run`` cannot say it itself: it execs the program. So it passes the words
that start it again in ``PROCSCOPE_RUN_NOTICE`` (only when its stderr is a terminal);
the program's top process takes the variable out at set-up (no child sees it) and,
after its exit flush, writes the line on stderr if stderr is still a terminal and the
trace DB was among the exporters.
"""

from __future__ import annotations

import os
import shlex
import sys

TYPE_CHECKING = False  # (not typing's: procscope run imports this module)
if TYPE_CHECKING:
    from collections.abc import Iterable

ENV_RUN_NOTICE = "PROCSCOPE_RUN_NOTICE"

_claimed: dict[str, object] = {}


def claim(db: str, exporters: Iterable[str]) -> None:
    """At set-up: take the request out of the environment, remember it for the exit."""
    command = os.environ.pop(ENV_RUN_NOTICE, None)
    if command and "tracedb" in exporters:
        _claimed.update(pid=os.getpid(), command=command, db=db)


def announce(run_id: str | None) -> None:
    """After the exit flush, in the process that claimed it: the line, on a terminal."""
    if _claimed.get("pid") != os.getpid():
        return
    try:
        if not sys.stderr.isatty():
            return
    except (AttributeError, ValueError):  # closed or replaced by the program
        return
    db = str(_claimed["db"])
    default = os.path.abspath(db) == os.path.abspath("procscope.db")
    where = "" if default else f" --db {shlex.quote(db)}"
    run = f" (run {run_id[:8]})" if run_id else ""
    sys.stderr.write(
        f"procscope: recorded into {db}{run}; see it with: {_claimed['command']} runs{where}\n"
    )
    sys.stderr.flush()
