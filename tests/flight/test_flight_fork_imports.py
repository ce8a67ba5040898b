"""A fork child pays nothing for a flight recorder that was never started."""

from __future__ import annotations

from pathlib import Path

from .conftest import run_program

FORKING = """
import multiprocessing as mp
import os
import sys

import procscope.core.flight  # (as a plugin imports it, procscope not set up)

WATCHED = ("procscope.core._flight_mirror", "procscope.core._flight_signal")


def report(results):
    results.put([name for name in WATCHED if name in sys.modules])


if __name__ == "__main__":
    assert not any(name in sys.modules for name in WATCHED)
    ctx = mp.get_context("fork")
    results = ctx.SimpleQueue()
    child = ctx.Process(target=report, args=(results,))
    child.start()
    print("multiprocessing", results.get())
    child.join()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, repr([name for name in WATCHED if name in sys.modules]).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print("os.fork", os.read(read, 4096).decode())
"""


def test_a_fork_child_imports_nothing_for_a_recorder_never_started(tmp_path: Path) -> None:
    """The ring's after-fork reset imported the mirror's and the signal's modules in
    every fork child (about 10 ms each) when only a plugin had imported the recorder;
    only modules already imported have anything to reset."""
    done = run_program(tmp_path, FORKING)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["multiprocessing []", "os.fork []"], done.stdout


HELD_AT_FORK = """
import multiprocessing as mp
import queue
import sys
import threading

import procscope
from procscope.core import _flight_spans, post_import


def child_work():
    jobs = queue.Queue()  # a new site: its first record registers it
    jobs.put(1)
    jobs.get()
    procscope.dump("from the child")  # a dump: its helper thread is listed
    import multiprocessing.managers  # (a watched import, in a child that patches on it)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, db=sys.argv[1])
    locks = (_flight_spans._helpers_lock, post_import._lock)
    held, release = threading.Event(), threading.Event()

    def hold():  # a thread of the parent inside each of them at the fork
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(30)
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    child = mp.get_context("fork").Process(target=child_work)
    child.start()
    child.join(20)
    print(child.exitcode, flush=True)
    if child.exitcode is None:
        child.kill()
        child.join()
    release.set()
    holder.join()
    procscope.shutdown()
"""


def test_a_fork_child_records_and_dumps_whatever_its_parents_threads_held(
    tmp_path: Path,
) -> None:
    """A thread of the parent ending a dump's helper or importing a watched module at
    the fork held a lock that the child inherited held, with nobody to release it: the
    child's dump or its next watched import waited for ever. Those locks are new in each
    process now (a new queue's call site, also registered in the child, takes none)."""
    done = run_program(tmp_path, HELD_AT_FORK, str(tmp_path / "trace.db"), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", (done.stdout, done.stderr)


SAMPLED_FORK = """
import os
import sys
import threading

import procscope

if __name__ == "__main__":
    # (every process span sampled: at 0.01, one os.fork child in a hundred)
    procscope.setup(sample_rate=1.0, flight_recorder="on", db=sys.argv[1])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        names = sorted(thread.name for thread in threading.enumerate())
        os.write(write, repr(names).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print(os.read(read, 4096).decode())
    procscope.shutdown()
"""


def test_an_os_fork_child_whose_span_is_sampled_has_no_mirror_thread(tmp_path: Path) -> None:
    """An os.fork child keeps the threads of the plain child (its ring is not mirrored:
    the mirror's thread would be one more); one whose process span was sampled started
    the mirror anyway, which CPython's test_clear_threads_states_after_fork saw at 0.01
    in about one run in fifty."""
    done = run_program(tmp_path, SAMPLED_FORK, str(tmp_path / "trace.db"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MainThread']", (done.stdout, done.stderr)
