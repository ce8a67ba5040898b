"""``procscope dump PID`` on child processes, and the markers that let the CLI signal
them: every kind of child can be asked, and none leaves its marker behind; nor does a
run leave its empty hand-off directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from procscope.core import _flight_signal

from .conftest import CLI, clean_environ, cli

CHILDREN = """
import multiprocessing
import os
import queue
import sys
import time

import procscope


def work(label, go_on):
    # (the same in every child: ten messages on a queue of its own, then wait)
    jobs = procscope.name(queue.Queue(), label)
    for i in range(10):
        jobs.put(f"{label}-{i}")
        jobs.get()
    while not os.path.exists(go_on):
        time.sleep(0.01)


if __name__ == "__main__":
    db, go_on = sys.argv[1], sys.argv[2]
    procscope.setup(sample_rate=0.0, db=db)
    children = [
        multiprocessing.get_context(method).Process(target=work, args=(method, go_on))
        for method in ("fork", "spawn", "forkserver")
    ]
    for child in children:
        child.start()
    bare = os.fork()
    if bare == 0:
        work("os.fork", go_on)
        os._exit(0)
    print(*[child.pid for child in children], bare, flush=True)
    for child in children:
        child.join()
    os.waitpid(bare, 0)
    procscope.shutdown()
"""


def _ask_until_it_answers(pid: int) -> subprocess.CompletedProcess[str]:
    # A multiprocessing fork child writes its marker on its mirror's first tick (0.1 s);
    # a spawn or forkserver child once it has set procscope up.
    deadline = time.monotonic() + 30
    while True:
        asked = subprocess.run([CLI, "dump", str(pid)], capture_output=True, text=True,
                               env=clean_environ(), timeout=60)
        if asked.returncode == 0 or time.monotonic() > deadline:
            return asked
        time.sleep(0.1)


def test_each_kind_of_child_can_be_asked_to_dump_and_leaves_no_marker(tmp_path: Path) -> None:
    """``procscope dump`` reaches a fork, spawn, forkserver and bare ``os.fork`` child;
    each writes its own messages out; and no marker of theirs or their parent's is
    left once the program has ended."""
    db, go_on = tmp_path / "flight.db", tmp_path / "go-on"
    program = tmp_path / "program.py"
    program.write_text(CHILDREN)
    with subprocess.Popen([sys.executable, str(program), str(db), str(go_on)],
                          stdout=subprocess.PIPE, text=True, env=clean_environ()) as parent:
        try:
            assert parent.stdout is not None
            pids = [int(word) for word in parent.stdout.readline().split()]
            assert len(pids) == 4
            for pid in pids:
                asked = _ask_until_it_answers(pid)
                assert asked.returncode == 0, (pid, asked.stderr)
            # (each handles the signal between two bytecodes of its polling loop)
            time.sleep(0.5)
        finally:
            go_on.write_text("")
            assert parent.wait(timeout=60) == 0
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert [r["reason"] for r in recordings] == ["procscope dump"] * 4, recordings
    for label in ("fork", "spawn", "forkserver", "os.fork"):
        rows = cli("messages", "--db", str(db), "--queue", label, "--limit", "1000")
        assert sorted(row["content"] for row in rows) == sorted(
            f"{label}-{i}" for i in range(10)), label
    folder = _flight_signal.marker_dir()
    left = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    assert not {str(pid) for pid in [parent.pid, *pids]} & left


def test_procscope_dump_removes_markers_of_processes_that_are_gone(tmp_path: Path) -> None:
    """A marker whose process is gone (killed before it could remove it, or a pid now
    another process's) is removed by the next ``procscope dump``."""
    folder = Path(_flight_signal.marker_dir())
    folder.mkdir(mode=0o700, exist_ok=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (folder / str(gone.pid)).write_text("12345")
    (folder / str(os.getpid())).write_text("1")  # this process, another start time
    asked = subprocess.run([CLI, "dump", str(gone.pid)], capture_output=True, text=True,
                           env=clean_environ(), timeout=60)
    assert asked.returncode == 2
    assert not (folder / str(gone.pid)).exists()
    assert not (folder / str(os.getpid())).exists()


SPOOL = """
import multiprocessing
import os
import sys

import procscope


def nothing():
    pass


if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, exporter=sys.argv[1], db=sys.argv[2])
    child = multiprocessing.get_context("fork").Process(target=nothing)
    child.start()
    child.join()
    folder = os.environ["PROCSCOPE_HANDOFF_DIR"]
    print(folder, os.path.isdir(folder), flush=True)
"""


def test_a_run_leaves_no_empty_spool_directory(tmp_path: Path) -> None:
    """The hand-off directory that a child's flight recorder mirror made is gone once
    the program has ended, beside the trace DB and in the temporary folder alike."""
    program = tmp_path / "program.py"
    program.write_text(SPOOL)
    for exporter in ("tracedb", "none"):
        done = subprocess.run([sys.executable, str(program), exporter, str(tmp_path / "t.db")],
                              capture_output=True, text=True, env=clean_environ(), timeout=60)
        assert done.returncode == 0, done.stderr
        folder, existed = done.stdout.split()
        assert existed == "True"  # (made by the child's mirror while the program ran)
        assert not os.path.exists(folder), exporter


def test_a_child_asked_before_its_marker_is_written_is_told_to_try_again(
    tmp_path: Path,
) -> None:
    """A child of a process with a marker, which catches SIGUSR2 but has no marker yet
    (a multiprocessing fork child writes its own 0.1 s after its start), is not
    signalled: the answer says to try again."""
    folder = Path(_flight_signal.marker_dir())
    folder.mkdir(mode=0o700, exist_ok=True)
    mine = folder / str(os.getpid())
    mine.write_text(_flight_signal.start_time(os.getpid()) or "")
    handler = ("import signal, time; signal.signal(signal.SIGUSR2, lambda *a: print('hit'));"
               "print('ready', flush=True); time.sleep(30)")
    with subprocess.Popen([sys.executable, "-c", handler], stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
            why = _flight_signal.ask(child.pid)
            assert why is not None and "try again" in why, why
            assert child.poll() is None
        finally:
            mine.unlink()
            child.kill()
