"""A span that ends with an exception writes the flight recorder out: the program's own
OpenTelemetry spans and procscope's, sampled at a rate of 0.01 by a trace that arrived
sampled (a ``traceparent`` with the sampled flag, as a request from a traced caller)."""

from __future__ import annotations

from pathlib import Path

from .conftest import cli, contents_received_by, run_program

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

# The program's part before its failing span: a thread named "handler" takes 40 jobs
# (unsampled at 0.01: only the ring keeps them) and counts them in a traced object.
PRELUDE = """
import multiprocessing as mp
import queue
import sys
import threading
import time

import procscope
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


@procscope.trace_state(name="tally")
class Tally:
    def __init__(self):
        self.last = None


def incoming():
    # A request's context, sampled by its caller.
    return TraceContextTextMapPropagator().extract(
        {"traceparent": "00-TRACE_ID-b7ad6b7169203331-01"})


procscope.setup(sample_rate=0.01, db=sys.argv[1])
tracer = trace.get_tracer("app")
jobs = procscope.name(queue.Queue(), "jobs")
for i in range(40):
    jobs.put(i)


def take_jobs():
    tally = Tally()
    for _ in range(40):
        tally.last = jobs.get()


def handle_on_a_thread(request):
    # A thread "handler" takes the jobs, then runs request() in the incoming context.
    def handle():
        take_jobs()
        token = context.attach(incoming())
        try:
            request()
        finally:
            context.detach(token)

    handler = threading.Thread(target=handle, name="handler")
    handler.start()
    handler.join()
    procscope.shutdown()
""".replace("TRACE_ID", TRACE_ID)

PROGRAM_SPAN = PRELUDE + """

def request():
    try:
        with tracer.start_as_current_span("handle"):
            raise ValueError("boom")
    except ValueError:
        pass


handle_on_a_thread(request)
"""


def recordings(db: Path) -> list[dict[str, object]]:
    return cli("traces", "--db", str(db), "--recordings")["recordings"]  # type: ignore[no-any-return]


def test_the_programs_own_span_that_raises_is_written_out(tmp_path: Path) -> None:
    """The program's span ``handle`` raises in a sampled trace: one recording, its reason
    naming the span and the exception, linked to the request's trace, holding the jobs
    the thread took and its traced object's changes before it."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, PROGRAM_SPAN, str(db))
    assert done.returncode == 0, done.stderr
    found = recordings(db)
    assert [r["reason"] for r in found] == ["exception in span handle: ValueError: boom"]
    assert contents_received_by(db, "handler") == [str(i) for i in range(40)]
    history = cli("state", "tally#1", "--db", str(db))["history"]
    lasts = [c["values"][0] for c in history if c["kind"] == "change" and c["fields"] == ["last"]]
    assert [str(v) for v in lasts] == [str(i) for i in range(40)]
    shown = cli("show", str(found[0]["trace_id"]), "--db", str(db))
    links = [link for root in shown["roots"] for link in root["links"]]
    assert [link["trace_id"] for link in links] == [TRACE_ID]


PROCSCOPE_SPAN = PRELUDE + """

def request():
    sending, _ = mp.Pipe()
    try:
        sending.send(threading.Lock())  # (a lock cannot be pickled)
    except Exception as exc:
        print(type(exc).__name__, flush=True)


handle_on_a_thread(request)
"""


def test_procscopes_own_span_that_raises_is_written_out(tmp_path: Path) -> None:
    """A sampled Pipe send of an object that cannot be pickled fails in procscope's own
    span (a record made into a span on the recorder's thread, stored as the program
    shuts down): a recording names that span and the exception."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, PROCSCOPE_SPAN, str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TypeError"]
    found = recordings(db)
    assert len(found) == 1
    reason = str(found[0]["reason"])
    assert reason.startswith("exception in span send "), reason
    assert "TypeError: cannot pickle '_thread.lock' object" in reason
    assert contents_received_by(db, "handler") == [str(i) for i in range(40)]


BURST = PRELUDE + """

def fail_often(n):
    for i in range(10):
        try:
            with tracer.start_as_current_span(f"handle {n}", context=incoming()):
                raise KeyError(i)
        except KeyError:
            pass


take_jobs()
threads = [threading.Thread(target=fail_often, args=(n,), name=f"failer-{n}") for n in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
procscope.shutdown()
"""


def test_a_burst_of_span_errors_makes_one_recording(tmp_path: Path) -> None:
    """Forty spans failing on four threads at once make one recording (triggers less than
    a second apart are one story), named after one of them."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, BURST, str(db))
    assert done.returncode == 0, done.stderr
    found = recordings(db)
    assert len(found) == 1
    assert str(found[0]["reason"]).startswith("exception in span handle "), found
    assert "KeyError" in str(found[0]["reason"])
    assert contents_received_by(db, "MainThread") == [str(i) for i in range(40)]


NOT_FAILURES = PRELUDE + """

def request():
    full = procscope.name(queue.Queue(maxsize=1), "full")
    try:
        full.put_nowait(1)
        full.put_nowait(2)  # queue.Full: flow control, not a failure
    except queue.Full:
        pass


handle_on_a_thread(request)
"""


def test_flow_control_in_a_sampled_put_makes_no_recording(tmp_path: Path) -> None:
    """A sampled put_nowait that finds its queue full ends its span with an error, which
    is flow control: no recording (the failed put is stored as a span all the same)."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, NOT_FAILURES, str(db))
    assert done.returncode == 0, done.stderr
    assert recordings(db) == []
    traces = cli("traces", "--db", str(db))["traces"]
    assert [t["error_count"] for t in traces if t["trace_id"] == TRACE_ID] == [1]


def test_the_recorder_off_makes_no_recording(tmp_path: Path) -> None:
    """With PROCSCOPE_FLIGHT_RECORDER=off the failing span is stored, and nothing is
    written out."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, PROGRAM_SPAN, str(db), PROCSCOPE_FLIGHT_RECORDER="off")
    assert done.returncode == 0, done.stderr
    assert recordings(db) == []
    traces = cli("traces", "--db", str(db))["traces"]
    assert [t["error_count"] for t in traces if t["trace_id"] == TRACE_ID] == [1]


UNSAMPLED = PRELUDE.replace("-01\"", "-00\"") + """

def work(lock):
    pass


def request():
    tasks = procscope.name(queue.PriorityQueue(), "tasks")
    tasks.put((1, {"job": 1}))
    try:
        tasks.put((1, {"job": 2}))  # (dicts do not compare)
    except TypeError as exc:
        print(type(exc).__name__, flush=True)
    time.sleep(1.2)  # (apart from the first: triggers within 1 s make one recording)
    worker = mp.get_context("spawn").Process(target=work, args=(threading.Lock(),),
                                             name="worker")
    try:
        worker.start()  # (a lock cannot be pickled for the spawned child)
    except TypeError as exc:
        print(type(exc).__name__, flush=True)
    time.sleep(1.2)
    sending, _ = mp.Pipe()
    try:
        sending.send(threading.Lock())
    except TypeError as exc:
        print(type(exc).__name__, flush=True)
    time.sleep(1.2)
    results = procscope.name(mp.SimpleQueue(), "results")
    try:
        results.put(threading.Lock())  # (a SimpleQueue pickles in put)
    except TypeError as exc:
        print(type(exc).__name__, flush=True)


if __name__ == "__main__":
    handle_on_a_thread(request)
"""


def test_procscopes_unsampled_operations_that_raise_are_written_out(tmp_path: Path) -> None:
    """In a request that arrived unsampled (no span is made), a PriorityQueue put of items
    that do not compare, a spawn Process whose argument cannot be pickled, a Pipe send
    and a SimpleQueue put of a lock raise out of the program's call: each writes a
    recording named after the span it would have had, the first holding the jobs taken
    before it."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, UNSAMPLED, str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TypeError"] * 4
    found = sorted(recordings(db), key=lambda r: str(r["start"]))
    reasons = [str(r["reason"]) for r in found]
    assert reasons[:2] == [
        "exception in span put tasks: TypeError: '<' not supported between instances of "
        "'dict' and 'dict'",
        "exception in span spawn worker: TypeError: cannot pickle '_thread.lock' object",
    ]
    assert reasons[2].startswith("exception in span send "), reasons
    assert reasons[2].endswith(": TypeError: cannot pickle '_thread.lock' object")
    assert reasons[3] == "exception in span put results: TypeError: cannot pickle " \
        "'_thread.lock' object"
    assert len(reasons) == 4
    for recording in found:  # (each links to the request's trace, though not stored)
        shown = cli("show", str(recording["trace_id"]), "--db", str(db))
        links = [link for root in shown["roots"] for link in root["links"]]
        assert [link["trace_id"] for link in links] == [TRACE_ID]
    assert contents_received_by(db, "handler") == [str(i) for i in range(40)]


IN_A_CHILD = """
import multiprocessing as mp
import sys

import procscope
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def work(jobs):
    for _ in range(30):
        jobs.get()
    incoming = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-TRACE_ID-b7ad6b7169203331-01"})
    try:
        with trace.get_tracer("app").start_as_current_span("handle", context=incoming):
            raise ValueError("boom in the worker")
    except ValueError:
        pass  # (and the worker ends well, at once)


if __name__ == "__main__":
    procscope.setup(sample_rate=0.01, db=sys.argv[1])
    ctx = mp.get_context(sys.argv[2])
    jobs = procscope.name(ctx.Queue(), "jobs")
    for i in range(30):
        jobs.put(i)
    worker = ctx.Process(target=work, args=(jobs,), name="worker")
    worker.start()
    worker.join()
    procscope.shutdown()
    sys.exit(worker.exitcode)
""".replace("TRACE_ID", TRACE_ID)


def test_a_workers_span_that_raises_is_written_out(tmp_path: Path, start_method: str) -> None:
    """A worker process's own span raises in a sampled trace and the worker ends well
    at once: the worker's recording names the span and holds the 30 jobs it took."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, IN_A_CHILD, str(db), start_method)
    assert done.returncode == 0, done.stderr
    assert [(r["process_name"], r["reason"]) for r in recordings(db)] == [
        ("worker", "exception in span handle: ValueError: boom in the worker")]
    assert contents_received_by(db, "worker") == [str(i) for i in range(30)]
