"""A worker that ends well while the recording it triggered is still being stored: its
end waits for the recording, which the program's trace DB then holds once, under the
trigger's reason (not a second time, "cut short", made by its parent)."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, contents_received_by, run_program

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

SLOW_DISK = """
import multiprocessing as mp
import sqlite3
import sys
import time

import procscope
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def work(jobs, ready, go):
    for _ in range(30):
        jobs.get()
    ready.set()
    go.wait()
    incoming = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-TRACE_ID-b7ad6b7169203331-01"})
    try:
        with trace.get_tracer("app").start_as_current_span("handle", context=incoming):
            raise ValueError("boom in the worker")
    except ValueError:
        pass  # (and the worker ends well, at once)


if __name__ == "__main__":
    db = sys.argv[1]
    # (rate 0: nothing of the worker's is sampled but the span of the request it serves)
    procscope.setup(sample_rate=0.0, db=db)
    ctx = mp.get_context(sys.argv[2])
    jobs = procscope.name(ctx.Queue(), "jobs")
    for i in range(30):
        jobs.put(i)
    ready, go = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=work, args=(jobs, ready, go), name="worker")
    worker.start()
    ready.wait()
    # Another writer holds the DB for half a second (a busy disk, another program): the
    # worker's recording waits for it, and so does the worker's end.
    other = sqlite3.connect(db, timeout=30, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    go.set()
    time.sleep(0.5)
    other.execute("COMMIT")
    other.close()
    worker.join()
    procscope.shutdown()
    sys.exit(worker.exitcode)
""".replace("TRACE_ID", TRACE_ID)


def test_a_worker_ending_while_its_recording_is_stored_is_recorded_once(
    tmp_path: Path, start_method: str
) -> None:
    """The worker's span raises, the worker returns at once, and the DB is held by
    another writer meanwhile: one recording, the span's, holding the worker's 30 jobs."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, SLOW_DISK, str(db), start_method)
    assert done.returncode == 0, done.stderr
    recordings = cli("traces", "--db", str(db), "--recordings")["recordings"]
    assert [(r["process_name"], r["reason"]) for r in recordings] == [
        ("worker", "exception in span handle: ValueError: boom in the worker")]
    assert contents_received_by(db, "worker") == [str(i) for i in range(30)]
