"""What this process recorded but could not deliver: one counter per reason.

Every place that gives up a span or a record (a full batch queue under the ``drop``
policy, a ``wait`` that ran out of time, an exit flush out of budget, a batch the exporter
could not write, the recorder's buffer) calls :func:`count_lost`. The trace DB exporter
writes the totals into the DB's ``losses`` table, and the CLI's read commands say that a
recording is incomplete, and by how much (docs/tracedb.md).

The counters belong to one process: a fork child starts at zero (the parent's losses are
the parent's to report), and its key (:func:`process_key`) is its own pid and start time.
Counting is off the hot paths (it runs only when something is lost) and thread-safe.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

QUEUE_FULL = "queue_full"  # a batch processor's queue was full (drop, or wait timed out)
EXIT_FLUSH = "exit_flush"  # a child's exit flush ran out of its budget
EXPORT_FAILED = "export_failed"  # the exporter could not write a batch
AFTER_SHUTDOWN = "after_shutdown"  # ended after its processor was shut down


class _Counters:
    """This process's counters; made anew in a fork child, at its first use there."""

    __slots__ = ("by_reason", "lock", "pid", "start_ns")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.start_ns = time.time_ns()
        self.by_reason: dict[str, int] = {}
        self.lock = threading.Lock()


_current = _Counters()


def _here() -> _Counters:
    """The counters of this process. A fork child sees its parent's (pid differs) and
    replaces them: with new ones and a new lock, since a thread of the parent may have
    held the old lock at the fork. Two threads of a child racing here may each make a
    set; the module global settles on one, and a count given to the other is at most one
    lost increment in a child's first microseconds (accepted: no lock can be trusted yet)."""
    global _current
    counters = _current
    if counters.pid != os.getpid():
        counters = _current = _Counters()
    return counters


def _after_fork_in_child() -> None:
    # Sets the child's start time at the fork itself; _here() covers a count made
    # before this hook runs (another at-fork hook registered earlier).
    _here()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def count_lost(n: int = 1, reason: str = QUEUE_FULL) -> None:
    """Count ``n`` spans or records that this process will never deliver."""
    if n <= 0:
        return
    counters = _here()
    with counters.lock:
        counters.by_reason[reason] = counters.by_reason.get(reason, 0) + n


def lost_by_reason() -> dict[str, int]:
    """This process's losses so far, by reason (empty when nothing was lost)."""
    counters = _here()
    with counters.lock:
        return dict(counters.by_reason)


def lost_total() -> int:
    """This process's losses so far, all reasons together."""
    return sum(lost_by_reason().values())


def process_key() -> tuple[int, int]:
    """(pid, start time in ns since the epoch): this process among every process that
    wrote to a DB, even when the system reuses a pid."""
    counters = _here()
    return counters.pid, counters.start_ns


_reporters: list[Any] = []


def add_reporter(method: Callable[[], None]) -> None:
    """Register a bound method that sends this process's totals where they are stored,
    at once and without blocking (the trace DB exporter's, in a child that sends to the
    DB owner). Held weakly: an exporter that goes away is forgotten."""
    _reporters.append(weakref.WeakMethod(method))  # type: ignore[arg-type]


def report_now() -> None:
    """Send the totals now: for a process about to exit that gave up spans (its exit
    flush ran out of budget), whose totals no later export will carry."""
    from .guard import log_internal_error

    for ref in list(_reporters):
        method = ref()
        if method is None:
            _reporters.remove(ref)
            continue
        try:
            method()
        except Exception:  # noqa: BLE001 -- a process's exit must never fail for this
            log_internal_error()


# A process whose own writes of its totals fail (the DB locked past every retry, at its
# end, say) leaves them in the program's spool directory (core.handoff), one file a
# process, rewritten with the new totals at each failure; the top process stores them
# at its end (counts only grow in the DB: storing a total twice changes nothing), and
# the next program that writes the DB finds the files of a top process that was killed.
SPOOL_PREFIX = "losses-"
SPOOL_SUFFIX = ".json"


def spool(process_name: str) -> None:
    """Leave this process's totals in the program's spool directory (none without one)
    for another process to store."""
    totals = lost_by_reason()
    if not totals:
        return
    from . import handoff

    directory = handoff._private_directory()
    if not directory:
        return
    import json

    pid, start_ns = process_key()
    path = os.path.join(directory, f"{SPOOL_PREFIX}{pid}-{start_ns}{SPOOL_SUFFIX}")
    from . import runs

    body = json.dumps({"pid": pid, "start_ns": start_ns, "name": process_name,
                       "run_id": runs.current_id(), "totals": totals,
                       "updated_ns": time.time_ns()}).encode()
    temporary = f"{path}.{threading.get_ident()}.tmp"  # (whole or absent: renamed)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def spooled() -> list[tuple[str, list[tuple[Any, ...]], str | None]]:
    """The totals left in the program's spool directory: (file, its rows for the DB's
    ``losses`` table: pid, process start, reason, count, time, process name; the
    process's run id or None), a file unreadable skipped."""
    import json

    from . import handoff

    directory = handoff.directory()

    found: list[tuple[str, list[tuple[Any, ...]], str | None]] = []
    try:
        names = os.listdir(directory) if directory else []
    except OSError:
        return found
    for name in sorted(names):
        if not (name.startswith(SPOOL_PREFIX) and name.endswith(SPOOL_SUFFIX)):
            continue
        path = os.path.join(directory, name)  # type: ignore[arg-type]
        try:
            with open(path, "rb") as file:
                data = json.loads(file.read())
            rows = [(int(data["pid"]), int(data["start_ns"]), str(reason), int(count),
                     int(data["updated_ns"]), str(data.get("name") or ""))
                    for reason, count in data["totals"].items()]  # fmt: skip
            run = data.get("run_id")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        found.append((path, rows, run if isinstance(run, str) and run else None))
    return found
