"""multiprocessing queues, pipes and Manager queues between real processes (every start method).

Each test runs a small program in a fresh interpreter: it calls ``procscope.setup()`` with
the trace DB, so that child processes are set up by procscope itself (the lifecycle
instrumentor), and the test reads what every process recorded from the DB file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB

START_METHODS = ["fork", "spawn", "forkserver"]

PIPELINE = """
import json, multiprocessing as mp, os, sys
import procscope

def worker(jobs, joinable, simple, conn, managed, results):
    # Each message comes back as it arrived, with its type name and this pid.
    for source in (jobs, joinable, simple):
        item = source.get()
        results.put((item, type(item).__name__, os.getpid()))
        if source is joinable:
            joinable.task_done()
    item = conn.recv()
    conn.send((item, type(item).__name__, os.getpid()))
    item = managed.get()
    results.put((item, type(item).__name__, os.getpid()))
    managed.task_done()  # ends the handling of the message: after the reply

if __name__ == "__main__":
    method, db = sys.argv[1], sys.argv[2]
    procscope.setup(db=db, exporter="tracedb", sample_rate=1.0)
    managers_at_setup = "multiprocessing.managers" in sys.modules
    ctx = mp.get_context(method)
    jobs = procscope.name(ctx.Queue(), "jobs")
    joinable = ctx.JoinableQueue()
    simple = ctx.SimpleQueue()
    parent_end, child_end = ctx.Pipe()
    manager = ctx.Manager()
    managed = procscope.name(manager.JoinableQueue(), "managed")
    results = procscope.name(ctx.Queue(), "results")
    child = ctx.Process(target=worker, args=(jobs, joinable, simple, child_end, managed, results))
    child.start()
    tracer = procscope_tracer = __import__("opentelemetry.trace").trace.get_tracer("program")
    with tracer.start_as_current_span("request"):
        jobs.put({"kind": "queue"})
        joinable.put(["joinable"])
        simple.put(("simple", 1))
        parent_end.send({"kind": "pipe"})
        managed.put({"kind": "manager"})
    received = [results.get(timeout=60) for _ in range(3)]
    received.append(parent_end.recv())
    received.append(results.get(timeout=60))
    joinable.join()
    child.join(60)
    manager.shutdown()
    print(json.dumps({"received": received, "child": child.pid, "parent": os.getpid(),
                      "managers_at_setup": managers_at_setup}))
    procscope.shutdown()
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_messages_cross_processes_in_the_producer_trace(
    run_program: Any, tmp_path: Path, method: str
) -> None:
    """Queue, JoinableQueue, SimpleQueue, Pipe and Manager messages join the sender's trace
    (the Manager's proxies patched when the program's Manager() imports their module,
    which set-up does not)."""
    db = tmp_path / "trace.db"
    result = run_program(PIPELINE, method, str(db))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["managers_at_setup"] is False
    child = report["child"]
    assert [r[:2] for r in report["received"]] == [
        [{"kind": "queue"}, "dict"],
        [["joinable"], "list"],
        [["simple", 1], "tuple"],
        [{"kind": "pipe"}, "dict"],
        [{"kind": "manager"}, "dict"],
    ]
    with TraceDB(db) as tdb:
        spans = tdb.spans()
    request = next(s for s in spans if s.name == "request")
    sends = [s for s in spans if s.attributes.get("messaging.operation.type") == "send"]
    receives = [s for s in spans if s.attributes.get("messaging.operation.type") == "receive"]
    by_id = {s.attributes["messaging.message.id"]: s for s in sends}
    # The five messages of the request, received in the child, in the request's trace.
    in_child = [r for r in receives if r.pid == child and r.trace_id == request.trace_id]
    systems = sorted(r.attributes["messaging.system"] for r in in_child)
    assert systems == sorted([
        "python_multiprocessing_queue",
        "python_multiprocessing_queue",
        "python_multiprocessing_queue",
        "python_multiprocessing_pipe",
        "python_multiprocessing_manager",
    ])
    for receive in in_child:
        send = by_id[receive.attributes["messaging.message.id"]]
        assert send.pid == report["parent"] and receive.parent_span_id == send.span_id
        assert receive.attributes["procscope.messaging.sender.pid"] == report["parent"]
        assert receive.attributes["procscope.messaging.wait_time"] >= 0
    names = {r.attributes["messaging.destination.name"] for r in in_child}
    assert {"jobs", "managed"} <= names
    # The child's replies: sent under the names given in the parent, still in the trace.
    replies = [s for s in sends if s.pid == child]
    assert {s.name for s in replies} >= {"put results"}
    assert all(s.trace_id == request.trace_id for s in replies)
    back = [r for r in receives if r.pid == report["parent"]]
    assert len(back) == 5 and all(r.trace_id == request.trace_id for r in back)


PLAIN_CHILD = """
import json, multiprocessing as mp, os, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from procscope.instrumentation.messaging import MessagingInstrumentor

class Point:
    def __init__(self, x):
        self.x = x
    def __eq__(self, other):
        return type(other) is Point and other.x == self.x

def worker(q, simple, conn, managed, out):
    import sys
    instrumented = "procscope.instrumentation.messaging" in sys.modules and __import__(
        "queue").Queue.put.__module__ != "queue"
    got = [q.get(), simple.get(), conn.recv(), managed.get()]
    out.put(([type(g).__name__ for g in got], [g == Point(i) for i, g in enumerate(got)],
             instrumented))

if __name__ == "__main__":
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    MessagingInstrumentor().instrument(tracer_provider=provider)
    ctx = mp.get_context(sys.argv[1])
    q, simple, out = ctx.Queue(), ctx.SimpleQueue(), ctx.Queue()
    a, b = ctx.Pipe()
    manager = ctx.Manager()
    managed = manager.Queue()
    child = ctx.Process(target=worker, args=(q, simple, b, managed, out))
    child.start()
    q.put(Point(0)); simple.put(Point(1)); a.send(Point(2)); managed.put(Point(3))
    types, equal, instrumented = out.get(timeout=60)
    child.join(60)
    manager.shutdown()
    carried = sum(1 for s in exporter.get_finished_spans() if s.name.startswith(("put", "send")))
    print(json.dumps({"types": types, "equal": equal, "child_instrumented": instrumented,
                      "sampled_sends": carried}))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_consumer_without_procscope_set_up_gets_the_plain_objects(
    run_program: Any, method: str
) -> None:
    """A child where nothing is instrumented gets exactly the objects, not wrappers."""
    result = run_program(PLAIN_CHILD, method)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "types": ["Point"] * 4,
        "equal": [True] * 4,
        "child_instrumented": False,
        "sampled_sends": 4,
    }


UNPICKLABLE = """
import json, multiprocessing as mp, sys, threading, time
from opentelemetry.sdk.trace import TracerProvider
from procscope.instrumentation.messaging import MessagingInstrumentor

def failures():
    ctx = mp.get_context("spawn")
    outcome = {}
    simple = ctx.SimpleQueue()
    try:
        simple.put(threading.Lock())
    except Exception as exc:
        outcome["simple"] = type(exc).__name__
    a, b = ctx.Pipe()
    try:
        a.send(lambda: 1)
    except Exception as exc:
        outcome["pipe"] = type(exc).__name__
    q = ctx.Queue()
    q.put(threading.Lock())  # fails in the feeder thread, which prints it
    q.put("next")
    outcome["queue_next"] = q.get(timeout=10)
    outcome["simple_next"] = (simple.put("ok"), simple.get())[1]
    return outcome

if __name__ == "__main__":
    plain = failures()
    sys.stderr.write("=== instrumented\\n")
    MessagingInstrumentor().instrument(tracer_provider=TracerProvider())
    traced = failures()
    print(json.dumps({"plain": plain, "traced": traced}))
"""


def test_unpicklable_messages_fail_exactly_as_without_procscope(run_program: Any) -> None:
    """Same exception type at the same place: at once for a pipe/SimpleQueue, in the feeder."""
    result = run_program(UNPICKLABLE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["plain"] == report["traced"]
    assert report["traced"]["simple"] == "TypeError" and report["traced"]["pipe"] in (
        "PicklingError", "AttributeError", "TypeError")
    assert report["traced"]["queue_next"] == "next"
    plain_err, traced_err = result.stderr.split("=== instrumented\n")
    last_line = [line for line in plain_err.splitlines() if "Error" in line][-1]
    assert last_line in traced_err  # the feeder thread reported the same error


def test_a_queue_pickled_outside_spawning_fails_as_before(recorder: Any) -> None:
    """multiprocessing refuses to pickle a queue outside process start, with or without us."""
    import multiprocessing
    import pickle

    q = multiprocessing.get_context("spawn").Queue()
    try:
        with pytest.raises(RuntimeError, match="inheritance"):
            pickle.dumps(q)
    finally:
        q.close()
        q.join_thread()


class Unprintable:
    """Picklable, but its repr and == raise."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no ==")

    __hash__ = object.__hash__


def test_hostile_messages_cross_multiprocessing_unchanged(recorder: Any) -> None:
    """Raising repr/==, huge and self-referencing messages come out of queues and pipes whole."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    loop: list[Any] = ["head"]
    loop.append(loop)
    huge = bytes(range(256)) * 100  # big, yet within a pipe buffer: one thread sends and reads
    q, simple = ctx.Queue(), ctx.SimpleQueue()
    a, b = ctx.Pipe()
    try:
        for send, receive in ((q.put, q.get), (simple.put, simple.get), (a.send, b.recv)):
            # One at a time: a pipe's buffer holds less than the huge message.
            first = (send(Unprintable(7)), receive())[1]
            second = (send(loop), receive())[1]
            third = (send(huge), receive())[1]
            assert type(first) is Unprintable and first.value == 7
            assert second[0] == "head" and second[1] is second
            assert third == huge
    finally:
        q.close()
        q.join_thread()
        simple.close()
        a.close()
        b.close()
    sends = recorder.messaging("send")
    receives = recorder.messaging("receive")
    assert len(sends) == len(receives) == 9
    contents = [s.attributes["procscope.messaging.content"] for s in sends]
    # Shown by its fields: its raising __repr__ is never called.
    assert sum("Unprintable(value=7)" in c for c in contents) == 3
    sizes = [s.attributes.get("messaging.message.body.size") for s in sends]
    assert sizes.count(len(huge)) == 3


def test_raw_bytes_through_a_pipe_are_recorded_unpropagated(recorder: Any) -> None:
    """send_bytes/recv_bytes on a Pipe (CPython's test_sendbytes under procscope failed
    with an AttributeError in the sender): the bytes arrive unchanged, and each end has
    its span, marked as not carrying the trace."""
    import multiprocessing

    a, b = multiprocessing.get_context("spawn").Pipe()
    try:
        a.send_bytes(b"abcdef", 1, 3)
        assert b.recv_bytes() == b"bcd"
        a.send_bytes(memoryview(b"xyz"))
        assert b.recv_bytes() == b"xyz"
    finally:
        a.close()
        b.close()
    sends = recorder.messaging("send")
    receives = recorder.messaging("receive")
    assert len(sends) == len(receives) == 2
    for span in sends + receives:
        assert span.attributes["procscope.messaging.context_propagated"] is False
    assert [s.attributes["messaging.message.body.size"] for s in sends] == [3, 3]
