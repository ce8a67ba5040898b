"""No fork inside a write transaction of this process.

SQLite keeps the locks a process holds on a file in tables of its own, one per file,
shared by every connection of the process. A fork child inherits those tables, but not
the locks themselves (``fcntl`` locks belong to the process that took them). A child
forked while a thread of its parent held the WAL's write lock finds that lock "held by
another connection of this process" for as long as it lives: its own writer waits a whole
busy timeout, then loses its batch. Seen with 40 ``fork`` children writing for themselves
(``PROCSCOPE_DB_RELAY=0``, or a child whose relay send failed): one child in two runs
stalled 5 s and lost its process span.

So a write transaction holds :data:`gate` from the moment the write lock is ours until it
ends, and ``os.fork`` (every fork: ``multiprocessing``'s too) takes the gate first: a
fork waits for the transaction under way to end, never for another process's. Other
writers are waited for outside the gate (:func:`begin_immediate` polls ``BEGIN
IMMEDIATE`` with SQLite's busy timeout set to 0), so a fork never waits on the busy
timeout. A fork that cannot have the gate within :data:`FORK_WAIT_S` (a transaction that
long) goes ahead; its child knows its tables are wrong and fails its own writes at once
(:data:`inherited_write_lock`), which counts the batch as lost, rather than stall.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

__all__ = ["FORK_WAIT_S", "begin_immediate", "end_transaction"]

#: The longest a fork waits for this process's write transaction under way: a batch's
#: transaction takes milliseconds; one that holds the lock longer (a disk that stalls a
#: checkpoint) must not hold up the program's start of a process. The child then fails
#: its own writes, counted: its batches normally go to the DB's owner anyway.
FORK_WAIT_S = 0.1

gate = threading.Lock()
# How long one try waits for the gate, held by another write transaction of this process.
_GATE_POLL_S = 0.05
# True in a child forked while the gate was held by a thread of its parent.
inherited_write_lock = False
# Whether this thread's fork has the gate: per thread, as two threads may fork at once
# (one waiting for the gate while the other's fork holds it).
_forking = threading.local()


def begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` on ``conn``, waiting for other writers up to its busy timeout;
    returns with :data:`gate` held: release it with :func:`end_transaction` once the
    transaction has ended, whichever way."""
    if inherited_write_lock:
        raise sqlite3.OperationalError(
            "database is locked (this process was forked during a write of its parent)")
    busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    deadline = time.monotonic() + busy_ms / 1000.0
    pause = 0.0005
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            # Bounded, as the busy timeout bounds waiting for another process: the gate's
            # holder may be this very thread (a signal handler flushing another trace DB
            # in the middle of a transaction), which would otherwise wait for itself.
            if gate.acquire(timeout=max(0.0, min(_GATE_POLL_S, deadline - time.monotonic()))):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except BaseException as exc:
                    gate.release()
                    text = str(exc)
                    if not isinstance(exc, sqlite3.OperationalError) or (
                        "locked" not in text and "busy" not in text
                    ) or time.monotonic() >= deadline:
                        raise
            elif time.monotonic() >= deadline:
                raise sqlite3.OperationalError("database is locked (by this process)")
            # (SQLite's own busy handler sleeps 1 to 100 ms; shorter at first here, as a
            # commit of another process takes about a millisecond)
            time.sleep(pause)
            pause = min(pause * 2, 0.025)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")


def end_transaction() -> None:
    """The transaction :func:`begin_immediate` began has ended (committed or rolled back)."""
    gate.release()


def _before_fork() -> None:
    _forking.held = gate.acquire(timeout=FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    if getattr(_forking, "held", False):
        _forking.held = False
        gate.release()


def _after_fork_in_child() -> None:
    global gate, inherited_write_lock
    if getattr(_forking, "held", False):  # (the forking thread's, the child's only one)
        _forking.held = False
        gate.release()
    else:
        # Held by a thread of the parent, in a transaction that kept the write lock past
        # FORK_WAIT_S: a new gate (that thread is not here), and no write of our own.
        gate = threading.Lock()
        inherited_write_lock = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
