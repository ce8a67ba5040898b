"""The ring's bounds (its window and its memory cap), and a trigger during a fork."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, contents_received_by, run_program

BOUNDS = """
import queue
import sys
import time

import procscope

procscope.setup(sample_rate=0.01, db=sys.argv[1], flight_window=sys.argv[2],
                flight_memory=sys.argv[3])
jobs = procscope.name(queue.Queue(), "jobs")
for i in range(int(sys.argv[4])):
    jobs.put(i)
for i in range(int(sys.argv[4])):
    jobs.get()
    if i == 99 and sys.argv[5] == "pause":
        time.sleep(1.0)
procscope.dump("bounds")
procscope.shutdown()
"""


def _recording(db: Path) -> dict[str, int]:
    (recording,) = cli("traces", "--db", str(db), "--recordings")["recordings"]
    return recording  # type: ignore[no-any-return]


def test_records_older_than_the_window_are_left_out(tmp_path: Path) -> None:
    """With a 0.5 s window, the 100 messages before a 1 s pause are left out of the dump
    (counted as expired), the 100 after it are in."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, BOUNDS, str(db), "0.5s", "32MiB", "200", "pause")
    assert done.returncode == 0, done.stderr
    received = [int(c) for c in contents_received_by(db, "MainProcess")]
    unsampled_before = [c for c in received if c < 100]
    assert [c for c in received if c >= 100] == list(range(100, 200))
    assert len(unsampled_before) < 10  # only the sampled ones, whose spans were made
    assert _recording(db)["expired"] >= 280  # 200 puts and 100 gets


def test_the_memory_cap_keeps_the_newest_records_and_counts_the_others(tmp_path: Path) -> None:
    """A ring capped at 64 KiB (327 records of 200 B) holds the newest puts and gets of
    5,000 messages; the rest are counted as overwritten."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, BOUNDS, str(db), "30s", "64KiB", "5000", "none")
    assert done.returncode == 0, done.stderr
    recording = _recording(db)
    assert recording["records"] <= 64 * 1024 // 200
    assert recording["records"] + recording["overwritten"] >= 2 * 5000 - 200
    received = [int(c) for c in contents_received_by(db, "MainProcess")]
    newest = [c for c in received if c >= 5000 - 100]
    assert newest == list(range(5000 - 100, 5000))


def test_a_dump_larger_than_the_batch_queue_is_stored_whole(tmp_path: Path) -> None:
    """A dump of 24,000 records (more than the 8,192 spans the batch processor's queue
    holds) reaches the trace DB whole: every one of the 12,000 messages taken is in
    `procscope messages`, in order (the batch processor's queue dropped two thirds)."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, BOUNDS, str(db), "30s", "32MiB", "12000", "none")
    assert done.returncode == 0, done.stderr
    assert _recording(db)["records"] >= 2 * 12000 - 600  # (sampled ones are spans)
    received = [int(c) for c in contents_received_by(db, "MainProcess")]
    assert received == list(range(12000))


def test_a_large_dump_through_the_processors_is_stored_whole(tmp_path: Path) -> None:
    """With a span processor of the program's own beside procscope's (so the dump goes
    to the processors as ReadableSpans, not straight into the DB), a dump of 24,000
    records still reaches the DB whole: every message taken is in `procscope messages`."""
    source = BOUNDS.replace(
        "jobs = procscope.name(",
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import (\n"
        "    InMemorySpanExporter)\n"
        "mine = InMemorySpanExporter()\n"
        "trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(mine))\n"
        "jobs = procscope.name(",
    ).replace("procscope.shutdown()", "procscope.shutdown()\nprint(len(mine.get_finished_spans()))")
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, source, str(db), "30s", "32MiB", "12000", "none")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= 2 * 12000 - 600  # (the program's own got them)
    received = [int(c) for c in contents_received_by(db, "MainProcess")]
    assert received == list(range(12000))


DURING_FORK = """
import os
import queue
import sys
import threading
import time

import procscope
from opentelemetry import trace

procscope.setup(sample_rate=0.01, db=sys.argv[1])
jobs = procscope.name(queue.Queue(), "jobs")
# The children's own queue: the dumping thread never touches it. A child forked while
# that thread was inside jobs.put() or jobs.get() would inherit the queue's mutex held
# (CPython's queue renews no lock at a fork) and wait for ever on its own put.
mine = procscope.name(queue.Queue(), "mine")
stop = threading.Event()
drawn = threading.Event()
sampled = [True]


def keep_dumping():
    sampled[0] = trace.get_current_span().get_span_context().trace_flags.sampled
    drawn.set()
    if sampled[0]:
        # (one thread in 100 is drawn sampled: its puts would be spans, tens of thousands
        # of them, not records; another thread is started)
        return
    while not stop.is_set():
        jobs.put(1)
        jobs.get()
        procscope.dump("while forking")


while sampled[0]:
    drawn.clear()
    dumper = threading.Thread(target=keep_dumping)
    dumper.start()
    drawn.wait()
for n in range(20):
    pid = os.fork()
    if pid == 0:
        mine.put(n)
        mine.get()
        os._exit(3 if n % 2 else 0)  # (3: an abnormal end, the child's own trigger)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, 3), status
stop.set()
dumper.join()
procscope.shutdown()
print("done")
"""


def test_a_trigger_during_a_fork_neither_blocks_nor_breaks_the_child(tmp_path: Path) -> None:
    """A thread dumping without pause while the main thread forks twenty children (half
    of which end with exit code 3, a trigger of their own): every child ends, the
    program ends, and the children's dumps hold the child's own message, not the
    parent's records."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, DURING_FORK, str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"]
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    children = [r for r in recordings if r["reason"] == "exit code 3"]
    assert len(children) == 10
    assert all(r["records"] <= 3 for r in children)
