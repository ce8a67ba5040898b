"""At a rate of 0.01, a worker's recorded multiprocessing receives name their sender.

An unsampled message through a multiprocessing queue or pipe carries a small stamp (the
sender's pid, thread and a message number) when the flight recorder is on, so a dead
worker's dump says who sent what it took, and a sender's own dump joins it as one message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import cli, run_program

N = 40
CHANNELS = ("jobs", "simple", "pipe", "managed")

WORKER = """
import multiprocessing as mp
import os
import sys
import threading

import procscope

N = {n}


def work(jobs, simple, reader, managed):
    for i in range(N):
        jobs.get()
        simple.get()
        reader.recv()
        managed.get()
    raise ValueError("the worker gives up")


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    jobs = procscope.name(ctx.Queue(), "jobs")
    simple = procscope.name(ctx.SimpleQueue(), "simple")
    reader, writer = ctx.Pipe(duplex=False)
    procscope.name(reader, "pipe")
    procscope.name(writer, "pipe")
    manager = ctx.Manager()
    managed = procscope.name(manager.Queue(), "managed")
    worker = ctx.Process(target=work, args=(jobs, simple, reader, managed), name="worker")
    worker.start()
    # The feeder lives on until the parent's dump: a dump names a thread that has ended
    # by its ident, which a thread started later may have been given again.
    done = threading.Event()
    feeder = threading.Thread(
        target=lambda: ([simple.put(f"s{i}") for i in range(N)], done.wait(60)), name="feeder")
    feeder.start()
    for i in range(N):
        jobs.put(i)
        writer.send((i, "p"))
        managed.put(i)
    worker.join()
    if sys.argv[3] == "dump":
        procscope.dump("the parent looks too")
    done.set()
    feeder.join()
    manager.shutdown()
    procscope.shutdown()
    print(os.getpid(), threading.main_thread().native_id, feeder.native_id)
    sys.exit(0 if worker.exitcode == 1 else 5)
""".replace("{n}", str(N))


def _run(
    tmp_path: Path, start_method: str, parent_dumps: bool
) -> tuple[Path, int, dict[str, tuple[int, str]]]:
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, WORKER, str(db), start_method,
                       "dump" if parent_dumps else "no")
    assert done.returncode == 0, done.stderr
    pid, main_thread, feeder = (int(n) for n in done.stdout.split()[-3:])
    # Each channel's sending thread: (native id, name).
    threads = {"jobs": (main_thread, "MainThread"), "pipe": (main_thread, "MainThread"),
               "managed": (main_thread, "MainThread"), "simple": (feeder, "feeder")}
    return db, pid, threads


def _by_channel(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    channels: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda row: row["received_ns"] or 0):
        channels.setdefault(row["queue"], []).append(row)
    return channels


def test_a_dead_worker_s_receives_name_the_parent(tmp_path: Path, start_method: str) -> None:
    """Only the worker dumps (it raised): each message it took from a Queue, a SimpleQueue,
    a Pipe and a Manager queue is shown with FROM the parent's process and sending thread
    (its main thread, or a thread named feeder), in order."""
    db, parent, threads = _run(tmp_path, start_method, parent_dumps=False)
    rows = cli("messages", "--db", str(db), "--to", "worker", "--limit", "1000")
    channels = _by_channel(rows)
    assert sorted(channels) == sorted(CHANNELS)
    assert [str(r["content"]) for r in channels["jobs"]] == [str(i) for i in range(N)]
    assert [str(r["content"]) for r in channels["simple"]] == [f"s{i}" for i in range(N)]
    assert len(channels["pipe"]) == N
    for row in rows:
        sender = row["sender"]
        assert sender is not None, row
        assert sender["pid"] == parent
        assert (sender["thread_id"], sender["thread_name"]) == threads[row["queue"]]
    # The worker waited for them: the stamp brings the time each was sent.
    assert all(row["wait_ns"] is not None and row["wait_ns"] >= 0 for row in rows)


def test_both_dumps_make_one_message_each(tmp_path: Path, start_method: str) -> None:
    """The parent dumps too, after the worker died: each put and its get are ONE message
    with both ends (sender the parent's own send span, receiver the worker), none left
    with one end only."""
    db, parent, threads = _run(tmp_path, start_method, parent_dumps=True)
    rows = [r for r in cli("messages", "--db", str(db), "--limit", "1000")
            if r["queue"] in CHANNELS]
    assert len(rows) == len(CHANNELS) * N
    for row in rows:
        assert row["sender"] is not None and row["receiver"] is not None, row
        assert row["sender"]["span_id"], row  # (the parent's own send span, not a stamp)
        sender = row["sender"]
        assert sender["pid"] == parent
        assert (sender["thread_id"], sender["thread_name"]) == threads[row["queue"]]
        assert row["receiver"]["process_name"] == "worker"
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert sorted(r["pid"] == parent for r in recordings) == [False, True]  # (each end's)


BYTES = """
import json, multiprocessing as mp, pickle, threading
import procscope
from multiprocessing.reduction import ForkingPickler


def failures():
    reader, writer = mp.Pipe(duplex=False)
    try:
        writer.send(lambda: 1)
    except Exception as exc:
        pipe = type(exc).__name__
    failed = []
    q = mp.Queue()
    q._on_queue_feeder_error = lambda e, obj: failed.append([type(e).__name__, obj is lock])
    lock = threading.Lock()
    q.put(lock)
    q.put("next")
    return [pipe, failed, q.get(timeout=10)]


plain = failures()
procscope.setup(sample_rate=0.0, exporter="none")
out = {"plain": plain, "traced": failures()}
reader, writer = mp.Pipe(duplex=False)
message = {"a": [1, 2.5, "x"], "b": None}
writer.send(message)
wire = reader.recv_bytes()
out["plain_wire"] = wire == bytes(ForkingPickler.dumps(message))
out["arrives_equal"] = pickle.loads(wire) == message
writer.send(message)
got = reader.recv()
out["received"] = [type(got).__name__, got == message]
print(json.dumps(out))
"""


@pytest.mark.parametrize("recorder", ["off", "on"])
def test_a_stamped_message_arrives_as_sent(tmp_path: Path, recorder: str) -> None:
    """Through a Pipe and a Queue at rate 0: the receiver gets the message itself (same
    type, equal), an unpicklable one fails as it does without procscope (at once for a
    pipe; in the feeder, which hands the queue's hook the object that was put); with the
    recorder off the bytes on the wire are exactly plain pickle's."""
    done = run_program(tmp_path, BYTES, PROCSCOPE_FLIGHT_RECORDER=recorder)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["plain_wire"] is (recorder == "off")  # (on: the stamp travels along)
    assert out["arrives_equal"] is True
    assert out["received"] == ["dict", True]
    assert out["traced"] == out["plain"]
    assert out["traced"][1:] == [[["TypeError", True]], "next"]


KILLED_SENDER = """
import multiprocessing as mp
import os
import signal
import sys
import time

import procscope
from opentelemetry import trace

N = {n}


def work(results, sampled):
    sampled.value = trace.get_current_span().get_span_context().trace_flags.sampled
    if sampled.value:
        return  # (one worker in 100 is drawn sampled: its sends would be spans)
    for i in range(N):
        results.put(i)
    time.sleep(60)  # (killed while it waits)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    results = procscope.name(ctx.Queue(), "results")
    sampled = ctx.Value("i", 1)
    while sampled.value:  # (until a worker is unsampled: a sampled one ends at once)
        sampled.value = -1
        worker = ctx.Process(target=work, args=(results, sampled), name="worker")
        worker.start()
        while sampled.value == -1:
            time.sleep(0.01)
        if sampled.value:
            worker.join()
    for i in range(N):
        results.get()
    time.sleep(0.5)  # (the worker's ring reaches its disk mirror every 100 ms)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    procscope.shutdown()
    print(os.getpid(), worker.pid)
""".replace("{n}", str(N))


def test_a_killed_sender_s_messages_join_their_receives(tmp_path: Path, start_method: str) -> None:
    """A worker that sent N results is SIGKILLed: its sends, recovered from its disk
    mirror by the parent, and the parent's own receives (its recording of the kill) make
    one message each, from the worker to the parent's main thread."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, KILLED_SENDER, str(db), start_method)
    assert done.returncode == 0, done.stderr
    parent, worker = (int(n) for n in done.stdout.split()[-2:])
    rows = [r for r in cli("messages", "--db", str(db), "--limit", "1000")
            if r["queue"] == "results"]
    assert sorted(int(r["content"]) for r in rows) == list(range(N))
    for row in rows:
        sender, receiver = row["sender"], row["receiver"]
        assert sender is not None and receiver is not None, row
        assert sender["span_id"] and (sender["pid"], sender["process_name"]) == (worker, "worker")
        assert (receiver["pid"], receiver["thread_name"]) == (parent, "MainThread")


UNPATCHED = """
import json, os, pickle, threading, time
import procscope

procscope.setup(sample_rate=0.0, exporter="none")
from multiprocessing.reduction import ForkingPickler
from procscope.instrumentation.messaging import _carry

# A message stamped while the stamping pickler was not in place (instrumentation turned
# off between a put and the feeder's pickling) goes through any pickler as itself.
message = {"a": [1, 2], "b": "x"}
stamped = _carry.Stamped((message, threading.get_ident(), time.time_ns()))
out = {}
for name, dumps in (("plain", pickle.dumps), ("forking", ForkingPickler.dumps)):
    _carry.clear()
    got = pickle.loads(dumps(stamped))
    stamp = _carry.take()
    out[name] = [got == message, type(got).__name__, _carry.read_stamp(stamp)[1:]]
out["pid"] = [os.getpid(), threading.get_native_id()]
print(json.dumps(out))
"""


def test_a_stamped_message_pickled_by_another_pickler_arrives_as_itself(
    tmp_path: Path,
) -> None:
    """A stamped message pickled by a pickler that is not procscope's unpickles to the
    message itself, its stamp (pid, thread, name) noted for the receiving call."""
    done = run_program(tmp_path, UNPATCHED)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["plain"][:2] == out["forking"][:2] == [True, "dict"]
    assert out["plain"][2] == out["forking"][2] == [*out["pid"], "MainThread"]


CHILD_SENDS = """
import json
import multiprocessing as mp
import os
import sys
import threading

import procscope


def send(results, depth):
    # A process forked with os.fork() (multiprocessing's own children renew the forking
    # thread's native id; os.fork() leaves it as it was in the parent), and its own fork.
    pid = os.fork()
    if pid == 0:
        try:
            if depth:
                send(results, depth - 1)
            results.put((os.getpid(), threading.get_native_id()))
            results.close()
            results.join_thread()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    results = procscope.name(mp.get_context("fork").Queue(), "results")
    send(results, 1)
    got = [results.get(timeout=30) for _ in range(2)]
    procscope.dump("the parent looks")
    procscope.shutdown()
    print(json.dumps(got))
"""


def test_a_fork_child_s_stamp_names_its_own_thread(tmp_path: Path) -> None:
    """A child made by os.fork() (and its own such child) sends from the thread that
    forked it: the parent's dump shows each message FROM that process's own thread id,
    not the one the thread had in the process it was forked from (which threading keeps
    for it)."""
    db = tmp_path / "stamps.db"
    done = run_program(tmp_path, CHILD_SENDS, str(db))
    assert done.returncode == 0, done.stderr
    sent = {pid: native for pid, native in json.loads(done.stdout.splitlines()[-1])}
    rows = cli("messages", "--db", str(db), "--to", "MainProcess", "--limit", "100")
    rows = [row for row in rows if row["queue"] == "results"]
    assert len(rows) == 2, rows
    for row in rows:
        sender = row["sender"]
        assert sender is not None, row
        assert sender["thread_id"] == sent[sender["pid"]], (row, sent)
