"""queue.Queue, LifoQueue, PriorityQueue and SimpleQueue between real threads."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Any

import pytest
from opentelemetry import trace

import procscope
from procscope.instrumentation.messaging import MessagingInstrumentor

QUEUE_CLASSES = [queue.Queue, queue.LifoQueue, queue.PriorityQueue]


def _consume(q: Any, count: int, tracer: Any, got: list[Any]) -> None:
    for _ in range(count):
        item = q.get()
        with tracer.start_as_current_span("handle"):
            got.append(item)
        if hasattr(q, "task_done"):
            q.task_done()


@pytest.mark.parametrize("make", [*QUEUE_CLASSES, lambda: queue.SimpleQueue()])
def test_consumer_spans_join_the_producer_trace(recorder: Any, make: Any) -> None:
    """Each message's get span, and the consumer's work after it, are in the put's trace."""
    q = make()
    got: list[Any] = []
    consumer = threading.Thread(target=_consume, args=(q, 3, recorder.tracer, got))
    consumer.start()
    roots = {}
    for i in range(3):
        with recorder.tracer.start_as_current_span(f"request-{i}") as root:
            q.put((i, f"job-{i}"))
            roots[i] = root.get_span_context().trace_id
    consumer.join(10)
    assert sorted(got) == [(i, f"job-{i}") for i in range(3)]
    sends, receives = recorder.messaging("send"), recorder.messaging("receive")
    assert len(sends) == len(receives) == 3
    by_id = {s.attributes["messaging.message.id"]: s for s in sends}
    for receive in receives:
        send = by_id[receive.attributes["messaging.message.id"]]
        assert receive.context.trace_id == send.context.trace_id
        assert receive.parent.span_id == send.context.span_id
        assert receive.links[0].context.span_id == send.context.span_id
        assert receive.kind == trace.SpanKind.CONSUMER and send.kind == trace.SpanKind.PRODUCER
        sender_thread = receive.attributes["procscope.messaging.sender.thread.id"]
        assert sender_thread == threading.get_native_id()
        assert receive.attributes["thread.id"] == consumer.native_id
        assert receive.attributes["procscope.messaging.wait_time"] >= 0
    assert {s.context.trace_id for s in sends} == set(roots.values())
    for handle in recorder.spans("handle"):
        receive = next(r for r in receives if r.context.span_id == handle.parent.span_id)
        assert handle.context.trace_id == receive.context.trace_id


def test_span_names_and_attributes_follow_messaging_conventions(recorder: Any) -> None:
    """Span names are '{operation} {destination}', with the OTel messaging attributes."""
    jobs = queue.Queue()
    named = procscope.name(queue.Queue(), "named-jobs")
    jobs.put(b"12345")
    named.put("x")
    assert jobs.get() == b"12345" and named.get() == "x"
    put, get = recorder.messaging("send")[0], recorder.messaging("receive")[0]
    assert put.name == f"put jobs@test_messaging_threads.py:{_line_of('jobs = queue.Queue()')}"
    assert get.name.startswith("get jobs@test_messaging_threads.py:")
    assert put.attributes["messaging.system"] == "python_queue"
    assert put.attributes["messaging.operation.name"] == "put"
    assert put.attributes["messaging.message.body.size"] == 5
    assert put.attributes["process.pid"] == get.attributes["process.pid"]
    assert {s.name for s in recorder.messaging("send")} >= {"put named-jobs"}


def _line_of(text: str) -> int:
    with open(__file__) as source:
        for number, line in enumerate(source, 1):
            if text in line and "_line_of" not in line:
                return number
    raise AssertionError(text)


def test_consumer_gets_the_very_object_and_priority_order_is_kept(recorder: Any) -> None:
    """Identity is kept, and a PriorityQueue orders sampled and unsampled messages alike."""
    q: queue.PriorityQueue[Any] = queue.PriorityQueue()
    items = [[5, "e"], [1, "a"], [3, "c"], [2, "b"], [4, "d"]]
    for index, item in enumerate(items):
        if index % 2:
            q.put(item)  # no current span, rate 1.0: sampled as a root
        else:
            procscope_off(lambda item=item: q.put(item))
    out = [q.get() for _ in items]
    assert out == sorted(items)
    assert all(any(o is i for i in items) for o in out)


def procscope_off(action: Any) -> None:
    """Run ``action`` inside a non-sampled span, so that its put is not sampled."""
    ctx = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=trace.TraceFlags(0))
        )
    )
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        action()
    finally:
        context.detach(token)


def test_unsampled_messages_make_no_span_and_no_side_entry(recorder: Any, live_settings: Any
                                                           ) -> None:
    """At sample rate 0 nothing is recorded and the queue holds only the messages."""
    live_settings.sample_rate = 0.0
    q = queue.Queue()
    q.put("a")
    procscope_off(lambda: q.put("b"))
    assert "_procscope_side" not in q.__dict__
    assert [q.get(), q.get()] == ["a", "b"]
    assert recorder.spans() == []


def test_queue_semantics_are_unchanged(recorder: Any) -> None:
    """maxsize, full/empty/qsize, timeouts, queue.Full and queue.Empty behave as before."""
    q = queue.Queue(maxsize=2)
    assert q.empty() and not q.full() and q.qsize() == 0 and q.maxsize == 2
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    started = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert time.monotonic() - started >= 0.04
    assert q.qsize() == 2
    assert [q.get_nowait(), q.get(timeout=1)] == [1, 2]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    failed = [s for s in recorder.messaging("send") if s.status.status_code.name == "ERROR"]
    assert len(failed) == 2 and {s.attributes["error.type"] for s in failed} == {"Full"}
    assert "_procscope_side" not in q.__dict__  # failed puts took their entries back


def _wait_until_blocked(condition: threading.Condition) -> None:
    """Until a thread waits on ``condition`` (a fixed sleep is too short on a loaded machine)."""
    deadline = time.monotonic() + 10
    while not condition._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)


def test_blocked_producer_and_consumer_are_released_by_each_other(recorder: Any) -> None:
    """A put blocked on a full queue and a get blocked on an empty one still wake up."""
    q = queue.Queue(maxsize=1)
    q.put("first")
    results: list[Any] = []
    producer = threading.Thread(target=lambda: q.put("second"))
    producer.start()
    _wait_until_blocked(q.not_full)
    results.append(q.get())
    producer.join(5)
    results.append(q.get())
    consumer = threading.Thread(target=lambda: results.append(q.get(timeout=5)))
    consumer.start()
    _wait_until_blocked(q.not_empty)
    q.put("third")
    consumer.join(5)
    assert results == ["first", "second", "third"]
    blocked = [r for r in recorder.messaging("receive") if r.attributes["thread.id"]
               == consumer.native_id]
    assert blocked and blocked[0].attributes["procscope.messaging.block_time"] > 0


class Hostile:
    """A message whose repr and == raise, as user objects may."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no equality either")

    __hash__ = object.__hash__


@pytest.mark.parametrize("make", [*QUEUE_CLASSES, lambda: queue.SimpleQueue()])
def test_hostile_messages_are_delivered_unchanged(recorder: Any, make: Any) -> None:
    """Raising __repr__/__eq__, huge and self-referencing messages arrive as they were put."""
    hostile = Hostile()
    huge = list(range(200_000))
    loop: list[Any] = [1]
    loop.append(loop)
    messages = [(1, hostile), (2, huge), (3, loop), (4, threading.Lock())]
    q = make()
    for message in messages:
        q.put(message)
    out = [q.get() for _ in messages]
    if isinstance(q, queue.LifoQueue):
        out.reverse()
    assert all(a is b for a, b in zip(out, messages))
    contents = [s.attributes["procscope.messaging.content"] for s in recorder.messaging("send")]
    assert "(1, Hostile())" in contents  # shown by its fields: its __repr__ is never called
    assert all(len(c) <= 256 for c in contents)


def test_content_capture_follows_the_live_setting_and_masks_secrets(
    recorder: Any, live_settings: Any
) -> None:
    """capture_content off records no content; on, secret-looking values are masked."""
    q = queue.Queue()
    q.put({"user": "ann", "password": "hunter2"})
    live_settings.capture_content = False
    q.put({"user": "bob"})
    q.get()
    q.get()
    first, second = recorder.messaging("send")
    assert "hunter2" not in first.attributes["procscope.messaging.content"]
    assert "ann" in first.attributes["procscope.messaging.content"]
    assert "procscope.messaging.content" not in second.attributes


def test_context_is_released_at_the_next_get_and_at_task_done(recorder: Any) -> None:
    """After task_done (or the next get) the consumer is back in its own context."""
    q = queue.Queue()
    with recorder.tracer.start_as_current_span("producer"):
        q.put("one")
        q.put("two")
    outside = trace.get_current_span()
    q.get()
    during = trace.get_current_span().get_span_context()
    assert during.is_valid and during.trace_id == recorder.spans("put")[0].context.trace_id
    q.task_done()
    assert trace.get_current_span() is outside
    q.get()
    assert trace.get_current_span() is not outside
    procscope_off(lambda: q.put("three"))  # unsampled: releases and attaches nothing
    q.get()
    assert trace.get_current_span() is outside


def test_attached_context_does_not_reach_other_threads(recorder: Any) -> None:
    """A message context attached in one consumer thread is invisible to the others."""
    q = queue.Queue()
    seen: dict[str, Any] = {}
    with recorder.tracer.start_as_current_span("producer"):
        q.put("m")
    ready = threading.Event()
    done = threading.Event()

    def consumer() -> None:
        q.get()
        seen["consumer"] = trace.get_current_span().get_span_context().is_valid
        ready.set()
        done.wait(5)

    thread = threading.Thread(target=consumer)
    thread.start()
    ready.wait(5)
    seen["other"] = trace.get_current_span().get_span_context().is_valid
    done.set()
    thread.join(5)
    assert seen == {"consumer": True, "other": False}


def test_standard_library_queues_are_not_traced(recorder: Any) -> None:
    """An executor's own work queue is plumbing: submitting work makes no messaging span."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(lambda: 42).result(5) == 42
    assert recorder.messaging("send") == []


def test_instrument_and_uninstrument_are_idempotent_and_queues_keep_working(
    live_settings: Any,
) -> None:
    """Twice on, twice off: methods are the originals again; in-flight messages arrive."""
    from opentelemetry.sdk.trace import TracerProvider

    original_put, original_get = queue.Queue.put, queue.Queue.get
    original_simple = queue.SimpleQueue
    before = queue.Queue()
    instrumentor = MessagingInstrumentor()
    provider = TracerProvider()
    instrumentor.instrument(tracer_provider=provider)
    instrumentor.instrument(tracer_provider=provider)
    assert queue.Queue.put is not original_put
    simple = queue.SimpleQueue()
    before.put("in flight")
    simple.put("also in flight")
    instrumentor.uninstrument()
    instrumentor.uninstrument()
    assert queue.Queue.put is original_put and queue.Queue.get is original_get
    assert queue.SimpleQueue is original_simple
    assert before.get_nowait() == "in flight" and simple.get_nowait() == "also in flight"
    before.put(1)
    simple.put(2)
    assert before.get() == 1 and simple.get() == 2
    # (a sampled message in flight at uninstrument keeps its side entry until the queue goes)


def test_queues_made_before_instrument_are_traced(live_settings: Any) -> None:
    """Methods are patched on the classes: a queue that existed before is traced too."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    early: queue.PriorityQueue[int] = queue.PriorityQueue()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = MessagingInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        early.put(3)
        assert early.get() == 3
    finally:
        instrumentor.uninstrument()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == [f"get PriorityQueue#{id(early):x}", f"put PriorityQueue#{id(early):x}"]


def test_default_names_of_queues_made_on_one_line(recorder: Any) -> None:
    """`a, b = Queue(), Queue()` does not give both the name "a,b"; a pipe's pair does."""
    import multiprocessing

    first, second = queue.Queue(), queue.Queue()
    left, right = multiprocessing.Pipe()
    from procscope.instrumentation.messaging._naming import name_of

    assert "," not in name_of(first) and "," not in name_of(second)
    assert name_of(first).startswith("Queue@test_messaging_threads.py:")
    assert name_of(left).startswith("left,right@")
    left.close()
    right.close()


def test_an_unsampled_get_does_not_wait_for_the_queue_lock_while_sampled_messages_fly(
    recorder: Any, live_settings: Any
) -> None:
    """With a sampled message in the queue, the get of an unsampled one does not take the
    queue's mutex again to look for its carrier (its consumers contend for that mutex), nor
    does a sampled message's entry, added or taken; the sampled message's get still finds
    its own carrier."""
    from procscope.instrumentation.messaging import _side

    q: queue.Queue[Any] = queue.Queue()
    with recorder.tracer.start_as_current_span("request"):
        q.put("sampled")
    live_settings.sample_rate = 0.0
    q.put("unsampled")
    assert q.get() == "sampled"  # (FIFO: the sampled message first; its entry goes)
    with recorder.tracer.start_as_current_span("request"):
        q.put("sampled again")  # in flight while the unsampled message is taken
    held, release = threading.Event(), threading.Event()

    def hold_the_mutex() -> None:
        with q.mutex:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_mutex)
    holder.start()
    assert held.wait(10)
    answers: list[Any] = []
    other, carrier = object(), ("a carrier",)

    def look_up() -> None:
        answers.append(_side.take(q, "unsampled"))
        # A sampled message's entry, added and taken: under a lock of the queue's side
        # map, not the mutex (for which every put and get of the queue contends).
        _side.add(q, other, carrier)
        answers.append(_side.take(q, other))

    taker = threading.Thread(target=look_up)
    taker.start()
    taker.join(2)
    finished = not taker.is_alive()
    release.set()
    holder.join(10)
    taker.join(10)
    assert finished, "the side map's look-up waited for the queue's mutex"
    assert answers == [None, carrier]
    assert [q.get(), q.get()] == ["unsampled", "sampled again"]
    receives = recorder.messaging("receive")
    assert len(receives) == 2  # both sampled messages' gets found their carriers
