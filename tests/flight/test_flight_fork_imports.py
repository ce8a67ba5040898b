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
