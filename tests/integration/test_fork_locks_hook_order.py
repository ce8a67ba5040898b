"""procscope's locks in a fork child, whatever the order of the at-fork hooks (issue 14).

A lock another thread of the parent held at the fork is copied taken into the child. A
program's at-fork hook registered BEFORE procscope was imported runs before procscope's own
hooks, and there it changes a traced object, traces a new one, names one or puts on a
queue: each takes one of procscope's locks. The program forks for real while a thread
holds that lock; the parent waits for its child with a deadline (a hang detector, not a
performance bound) and says whether it hung.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import os, queue, sys, threading, time

    CASE = sys.argv[1]
    done_in_hook = []

    def program_hook():  # registered first: runs before any hook of procscope's
        ACTIONS[CASE]()
        done_in_hook.append(CASE)

    os.register_at_fork(after_in_child=program_hook)

    import warnings
    import procscope
    import procscope._api as procscope_api
    from procscope.core import shared_state
    from procscope.instrumentation.messaging import _side
    from procscope.instrumentation.state import _tracker

    procscope.setup(exporter="none")
    warnings.simplefilter("ignore")  # setup again: 'already called', as it should

    class Account:
        def __init__(self):
            self.balance = 0

    class Other:
        def __init__(self):
            self.value = 0

    class NoAttributes:
        __slots__ = ("__weakref__",)

    account = procscope.trace_state(Account())  # named Account#1
    account.balance = 1
    simple = queue.SimpleQueue()
    simple.put("in the parent")  # its producer keeps the lock it found for later puts
    simple.get()
    anonymous = NoAttributes()

    def change_traced_object():
        procscope.name(account, "renamed in the child")  # its next change snapshots
        account.balance += 1

    ACTIONS = {
        "state change": change_traced_object,
        "trace a new object": lambda: procscope.trace_state(Other()),
        "name an object": lambda: procscope.name(anonymous, "anonymous"),
        "put on a SimpleQueue": lambda: simple.put("message"),
        "configure": lambda: procscope.configure(capture_content=True),
        "setup again": lambda: procscope.setup(exporter="none"),
    }
    LOCKS = {
        "state change": lambda: _tracker.TRACKERS[id(account)].lock,
        "trace a new object": lambda: _tracker._counters_lock,
        "name an object": lambda: shared_state.get().lock,
        "put on a SimpleQueue": lambda: _side.lock_of(simple),  # its side map's own
        "configure": lambda: procscope_api.current_scope()._lock,
        "setup again": lambda: procscope_api._lock,
    }

    held, release = threading.Event(), threading.Event()

    def hold(lock):
        with lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold, args=(LOCKS[CASE](),))
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        ACTIONS[CASE]()  # and once more from the child's own code
        os._exit(0 if done_in_hook == [CASE] else 3)
    release.set()
    holder.join()
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exit", os.waitstatus_to_exitcode(status))
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("child hung")
            break
        time.sleep(0.05)
    """
)

CASES = [
    "state change",
    "trace a new object",
    "name an object",
    "put on a SimpleQueue",
    "configure",
    "setup again",
]


@pytest.mark.parametrize("case", CASES)
def test_a_child_takes_the_lock_a_parent_thread_held_at_the_fork(case: str, tmp_path) -> None:
    """A parent's thread holds procscope's lock at the fork; the program's earlier at-fork
    hook does the operation taking it in the child: the child finishes and exits 0."""
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, case],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={"PROCSCOPE_RAISE_INTERNAL_ERRORS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child exit 0", result.stderr
