"""What writes the flight recorder out: a thread or task that raises, dump(), the CLI's
``procscope dump PID``, several triggers at once; and none when it is off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import CLI, clean_environ, cli, contents_received_by, run_program

THREAD_AND_TASK = """
import asyncio
import queue
import sys
import threading
import time

import procscope


def thread_work(jobs):
    for _ in range(40):
        jobs.get()
    raise ValueError("thread gave up")


async def task_work():
    inbox = procscope.name(asyncio.Queue(), "inbox")
    for i in range(30):
        inbox.put_nowait(f"note-{i}")
        await inbox.get()
    raise KeyError("task gave up")


procscope.setup(sample_rate=0.01, db=sys.argv[1])
jobs = procscope.name(queue.Queue(), "jobs")
for i in range(40):
    jobs.put(i)
worker = threading.Thread(target=thread_work, args=(jobs,), name="puller")
worker.start()
worker.join()
time.sleep(1.2)  # (apart from the thread's dump: triggers within 1 s make one)


async def main():
    task = asyncio.get_running_loop().create_task(task_work(), name="noter")
    await asyncio.wait([task])


asyncio.run(main())
procscope.shutdown()
"""


def test_a_thread_and_a_task_that_raise_are_written_out(tmp_path: Path) -> None:
    """The thread's exception writes a dump with what the thread took from its queue;
    the task's writes another with what it got from its asyncio queue."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, THREAD_AND_TASK, str(db))
    assert done.returncode == 0, done.stderr
    reasons = sorted(r["reason"] for r in cli("traces", "--db", str(db), "--recordings")[
        "recordings"])
    assert len(reasons) == 2
    assert "KeyError" in reasons[0] and "task" in reasons[0]
    assert "ValueError: thread gave up" in reasons[1] and "puller" in reasons[1]
    assert contents_received_by(db, "puller") == [str(i) for i in range(40)]
    notes = cli("messages", "--db", str(db), "--queue", "inbox", "--limit", "1000")
    received = [row for row in notes if row["receiver"]]
    assert sorted(str(row["content"]).strip("'") for row in received) == sorted(
        f"note-{i}" for i in range(30))


LIVE = """
import os
import queue
import sys
import threading
import time

import procscope

procscope.setup(sample_rate=0.01, db=sys.argv[1])
jobs = procscope.name(queue.Queue(), "jobs")
for i in range(25):
    jobs.put(i)
    jobs.get()
procscope.dump("checkpoint")
time.sleep(1.2)  # (apart from the first dump)
for i in range(25, 50):
    jobs.put(i)
    jobs.get()
print(os.getpid(), flush=True)
go_on = sys.argv[2]
while not os.path.exists(go_on):
    time.sleep(0.02)
procscope.shutdown()
"""


def test_dump_and_procscope_dump_pid_on_a_live_program(tmp_path: Path) -> None:
    """procscope.dump(reason) writes what came before it; ``procscope dump PID`` makes the
    running program write what came after (the first dump took its records out)."""
    db = tmp_path / "flight.db"
    go_on = tmp_path / "go-on"
    program = tmp_path / "program.py"
    program.write_text(LIVE)
    with subprocess.Popen([sys.executable, str(program), str(db), str(go_on)],
                          stdout=subprocess.PIPE, text=True, env=clean_environ()) as child:
        try:
            assert child.stdout is not None
            pid = int(child.stdout.readline())
            asked = subprocess.run([CLI, "dump", str(pid)], capture_output=True, text=True,
                                   env=clean_environ(), timeout=60)
            assert asked.returncode == 0, asked.stderr
            assert str(pid) in asked.stdout
            # The signal is handled between two bytecodes of the program's main thread,
            # which polls go_on: give it a moment before letting it end.
            time.sleep(0.3)
        finally:
            go_on.write_text("")
            assert child.wait(timeout=60) == 0
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert sorted(r["reason"] for r in recordings) == ["checkpoint", "procscope dump"]
    assert contents_received_by(db, "MainProcess") == [str(i) for i in range(50)]


def test_procscope_dump_never_signals_a_process_without_procscope(tmp_path: Path) -> None:
    """A process that has no procscope handler is left alone (SIGUSR2 would kill it):
    one line on stderr, exit status 2."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        asked = subprocess.run([CLI, "dump", str(sleeper.pid)], capture_output=True,
                               text=True, env=clean_environ(), timeout=60)
        assert asked.returncode == 2
        assert asked.stderr.startswith("procscope dump: cannot ask process")
        assert len(asked.stderr.splitlines()) == 1
        assert sleeper.poll() is None
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


SEVERAL = """
import sys
import threading

import procscope

# (rate 0: at 0.01 a thread is sampled now and then, and its failure is in its own span)
procscope.setup(sample_rate=0.0, db=sys.argv[1])
start = threading.Barrier(6)


def fail(n):
    start.wait()
    raise RuntimeError(f"failure {n}")


threads = [threading.Thread(target=fail, args=(n,)) for n in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
procscope.dump("and a dump() too")
procscope.shutdown()
"""


def test_several_triggers_at_once_make_one_dump(tmp_path: Path) -> None:
    """Six threads failing together, then a dump() call: one recording, holding the six
    failures, named after the first trigger."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, SEVERAL, str(db))
    assert done.returncode == 0, done.stderr
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert len(recordings) == 1
    assert "RuntimeError: failure" in recordings[0]["reason"]
    spans = cli("show", recordings[0]["trace_id"], "--db", str(db))
    text = str(spans)
    assert sum(text.count(f"failure {n}") >= 1 for n in range(6)) == 6


OFF = """
import multiprocessing as mp
import sys

import procscope


def work(jobs):
    for _ in range(50):
        jobs.get()
    raise ValueError("no flight")


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    jobs = mp.Queue()
    worker = mp.Process(target=work, args=(jobs,), name="worker")
    worker.start()
    for i in range(50):
        jobs.put(i)
    worker.join()
    procscope.shutdown()
"""


def test_the_recorder_off_writes_nothing(tmp_path: Path) -> None:
    """PROCSCOPE_FLIGHT_RECORDER=off: no recording, and only sampled messages; a bad
    PROCSCOPE_FLIGHT_WINDOW warns once, naming the setting, and the default is used."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, OFF, str(db), PROCSCOPE_FLIGHT_RECORDER="off",
                       PROCSCOPE_FLIGHT_WINDOW="a while")
    assert done.returncode == 0, done.stderr
    assert "PROCSCOPE_FLIGHT_WINDOW" in done.stderr
    assert cli("traces", "--db", str(db), "--recordings")["recordings"] == []
    assert len(contents_received_by(db, "worker")) < 50
    assert not os.path.exists(str(db) + ".handoff") or not any(
        name.startswith("flight-") for name in os.listdir(str(db) + ".handoff"))


ENDINGS = """
import multiprocessing as mp
import queue
import sys
import time

import procscope


def wait_forever(jobs, ready):
    for _ in range(10):
        jobs.get()
    ready.set()
    time.sleep(60)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    jobs = mp.Queue()
    ready = mp.Event()
    child = mp.Process(target=wait_forever, args=(jobs, ready), name="sleeper")
    child.start()
    for i in range(10):
        jobs.put(i)
    ready.wait(30)
    child.terminate()  # SIGTERM
    child.join()
    time.sleep(1.2)  # (apart from the parent's dump for the child)
    local = queue.Queue()
    for i in range(20):
        local.put(i)
        local.get()
    raise RuntimeError("the program gives up")
"""


def test_sigterm_and_the_programs_own_exception_are_written_out(tmp_path: Path) -> None:
    """A child ended by SIGTERM writes its own recording (its ten messages) and its
    parent one for it; the program's own unhandled exception writes the program's. (On
    a loaded machine the child's exit can cut its own recording short: its parent then
    makes it from the child's mirror, under the parent's reason, and the messages are
    there all the same.)"""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, ENDINGS, str(db))
    assert done.returncode == 1 and "the program gives up" in done.stderr
    reasons = sorted((r["process_name"], r["reason"]) for r in cli(
        "traces", "--db", str(db), "--recordings")["recordings"])
    parents = [reason for process, reason in reasons if process == "MainProcess"]
    assert len(parents) == 2, reasons
    assert "child sleeper" in parents[0] and "killed by SIGTERM" in parents[0]
    assert parents[1] == "exception in process: RuntimeError: the program gives up"
    sleepers = {reason for process, reason in reasons if process == "sleeper"}
    assert sleepers and all("killed by SIGTERM" in reason for reason in sleepers), reasons
    received = contents_received_by(db, "sleeper")
    assert sorted(set(received), key=int) == [str(i) for i in range(10)]
    if sleepers == {"killed by SIGTERM"}:  # (its own recording, whole)
        assert received == [str(i) for i in range(10)]
