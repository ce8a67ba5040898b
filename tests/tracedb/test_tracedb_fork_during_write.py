"""A fork child of a process that is writing the DB can write the DB itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CLI = str(Path(sys.executable).parent / "procscope")
CHILDREN = 40

FORKING = textwrap.dedent(
    """
    import multiprocessing, sys

    import procscope


    def work():
        pass


    if __name__ == "__main__":
        procscope.setup(db=sys.argv[1])
        ctx = multiprocessing.get_context("fork")
        for _ in range(int(sys.argv[2])):
            child = ctx.Process(target=work)
            child.start()
            child.join()
            assert child.exitcode == 0
        procscope.shutdown()
    """
)


def _environ(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    environ.update(extra)
    return environ


def test_fork_children_writing_for_themselves_lose_nothing(tmp_path: Path) -> None:
    """40 fork children started one after another, each writing its own spans (no relay):
    every child's process is in the DB and nothing is reported lost. SQLite keeps the
    locks a process holds in tables a fork child inherits without the locks: a child
    forked inside its parent's write transaction found the write lock "held by this
    process", waited its whole busy timeout, then lost its batch (one run in two, before
    a fork waited for the transaction under way: _forkgate.py)."""
    db = str(tmp_path / "trace.db")
    program = tmp_path / "program.py"
    program.write_text(FORKING)
    done = subprocess.run(
        [sys.executable, str(program), db, str(CHILDREN)], capture_output=True, text=True,
        timeout=120, env=_environ(PROCSCOPE_DB_RELAY="0", PROCSCOPE_DB_TIMEOUT="2"),
    )
    assert done.returncode == 0, done.stderr
    assert "cannot write" not in done.stderr, done.stderr
    listed = subprocess.run([CLI, "processes", "--db", db, "--json"], capture_output=True,
                            text=True, timeout=60, env=_environ())
    assert listed.returncode == 0, listed.stderr
    assert "incomplete" not in listed.stderr, listed.stderr
    processes = json.loads(listed.stdout)
    assert len(processes) == CHILDREN + 1, processes


LONG_TRANSACTION = textwrap.dedent(
    """
    import os, sqlite3, sys, threading

    from procscope.exporters.tracedb import TraceDBSpanExporter, _forkgate

    db = sys.argv[1]
    TraceDBSpanExporter(db).shutdown()  # (the DB made)
    conn = sqlite3.connect(db, isolation_level=None, timeout=5, check_same_thread=False)
    holding, release = threading.Event(), threading.Event()

    def hold():  # a write transaction of this process that outlasts FORK_WAIT_S
        _forkgate.begin_immediate(conn)
        try:
            holding.set()
            release.wait(10)
            conn.execute("ROLLBACK")
        finally:
            _forkgate.end_transaction()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    pid = os.fork()
    if pid == 0:
        print("child inherited the write lock:", _forkgate.inherited_write_lock, flush=True)
        try:
            _forkgate.begin_immediate(sqlite3.connect(db, isolation_level=None, timeout=5))
        except sqlite3.OperationalError as exc:
            print("child's write:", exc, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    release.set()
    holder.join()
    print("parent's write after:", _forkgate.inherited_write_lock, flush=True)
    """
)


def test_a_fork_during_a_long_transaction_goes_ahead_and_its_child_fails_at_once(
    tmp_path: Path,
) -> None:
    """A fork waits for this process's transaction only so long (FORK_WAIT_S): past
    that it goes ahead, and the child, whose SQLite tables say the write lock is its
    own, fails its writes at once with a reason, instead of waiting its busy timeout."""
    program = tmp_path / "long.py"
    program.write_text(LONG_TRANSACTION)
    done = subprocess.run([sys.executable, str(program), str(tmp_path / "trace.db")],
                          capture_output=True, text=True, timeout=60, env=_environ())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "child inherited the write lock: True",
        "child's write: database is locked (this process was forked during a write of its "
        "parent)",
        "parent's write after: False",
    ], done.stdout


def test_a_write_nested_in_a_transaction_of_its_own_thread_fails_instead_of_hanging(
    tmp_path: Path, make_traces
) -> None:
    """A write transaction holds the fork gate; a second trace DB's export on the same
    thread (a signal handler flushing it mid-transaction) cannot have it: it fails
    after its busy timeout, counted, instead of waiting for its own thread for ever."""
    import sqlite3

    from procscope.exporters.tracedb import TraceDBSpanExporter, _forkgate

    first = str(tmp_path / "first.db")
    TraceDBSpanExporter(first).shutdown()
    conn = sqlite3.connect(first, isolation_level=None, timeout=5)
    second = TraceDBSpanExporter(str(tmp_path / "second.db"), timeout=0.2)
    _forkgate.begin_immediate(conn)
    try:
        outcome = second.export(make_traces(1, 1, seed=3))
    finally:
        conn.execute("ROLLBACK")
        _forkgate.end_transaction()
        conn.close()
    assert outcome.name == "FAILURE"
    assert second.export(make_traces(1, 1, seed=4)).name == "SUCCESS"  # (once it is free)
    second.shutdown()


TWO_FORKS = textwrap.dedent(
    """
    import os, threading, time

    # Registered before procscope's hook, so it runs after it, while this fork holds
    # the gate: the other thread's fork, meanwhile, waits for it past FORK_WAIT_S.
    os.register_at_fork(
        before=lambda: time.sleep(0.3) if threading.current_thread().name == "slow" else None)

    import sqlite3, sys

    from procscope.exporters.tracedb import TraceDBSpanExporter, _forkgate

    def fork():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    slow = threading.Thread(target=fork, name="slow")
    slow.start()
    time.sleep(0.05)
    other = threading.Thread(target=fork, name="other")
    other.start()
    slow.join()
    other.join()
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=1)
    try:
        _forkgate.begin_immediate(conn)  # (a write of the parent, after both forks)
    except sqlite3.OperationalError as exc:
        print("the parent's write after two forks:", exc)
    else:
        conn.execute("ROLLBACK")
        _forkgate.end_transaction()
        print("the parent's write after two forks: ok")
    """
)


def test_two_forks_at_once_leave_the_gate_free(tmp_path: Path) -> None:
    """Two threads fork at once, one waiting for the gate past FORK_WAIT_S while the
    other's fork holds it: each releases only what it took, and the parent writes on
    (a flag shared by both forks left the gate held for good)."""
    program = tmp_path / "two_forks.py"
    program.write_text(TWO_FORKS)
    done = subprocess.run([sys.executable, str(program), str(tmp_path / "trace.db")],
                          capture_output=True, text=True, timeout=60, env=_environ())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the parent's write after two forks: ok", done.stdout
