"""Every kind of record becomes the span the SDK path made: the same workload run once with
SDK spans (a provider with a plain processor) and once with records (the recorder as the
provider's only processor), compared span by span, attribute by attribute, in order."""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import procscope
from procscope._sampler import AdjustableRateSampler
from procscope.core import shared_state
from procscope.core.recorder import RecordingSpanProcessor

# Values that differ from run to run whatever the path: ids, clocks, thread numbers.
VOLATILE = {
    "messaging.message.id", "procscope.messaging.wait_time", "procscope.messaging.block_time",
    "thread.id", "procscope.messaging.sender.thread.id", "exception.stacktrace",
    "procscope.state.duration",
}


@procscope.trace_state
class Account:
    """A traced object: each public method call that changes it is a state change."""

    def __init__(self) -> None:
        self.balance = 0

    def deposit(self, amount: int) -> None:
        self.balance += amount

    def fail(self) -> None:
        self.balance -= 1
        raise ValueError("refused")


def workload(tracer: Any) -> None:
    """Something of every record kind: sends and receives (root, child, in-process and
    asyncio), a failed send, thread, task and pool task spans (one failing), and state
    changes with and without a current span."""
    jobs: queue.Queue[Any] = queue.Queue(maxsize=1)
    procscope.name(jobs, "jobs")
    jobs.put({"order": 1})  # a root send
    jobs.get()
    with tracer.start_as_current_span("request"):
        jobs.put(b"bytes")  # a child send
        with pytest.raises(queue.Full):
            jobs.put_nowait("no room")  # a failed send
        jobs.get()
        Account().deposit(5)  # a change on the current span

    account = Account()
    account.deposit(3)  # a change with no current span: a span is made for it
    with pytest.raises(ValueError):
        account.fail()

    def work() -> None:
        jobs.put(7)

    def broken() -> None:
        raise RuntimeError("thread failed")

    for target in (work, broken):
        thread = threading.Thread(target=target, name=target.__name__)
        thread.start()
        thread.join()
    jobs.get()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(sum, [1, 2]).result()

    async def main() -> None:
        inbox: asyncio.Queue[int] = asyncio.Queue()
        procscope.name(inbox, "inbox")

        async def producer() -> None:
            await inbox.put(1)

        await asyncio.create_task(producer(), name="producer")
        await inbox.get()

    asyncio.run(main())


@pytest.fixture
def run(instrumented_run: Any) -> Callable[..., list[Any]]:
    """``run(sampler, recorded, work=workload, recorder=RecordingSpanProcessor)``: the
    spans of ``work`` under one provider, made as records (by ``recorder``) or not."""

    def spans(sampler: Any, recorded: bool, work: Callable[[Any], None] = workload,
              recorder: Any = RecordingSpanProcessor) -> list[Any]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler)
        processor: Any = SimpleSpanProcessor(exporter)
        provider.add_span_processor(recorder([processor]) if recorded else processor)
        instrumented_run(provider, work)
        return list(exporter.get_finished_spans())

    return spans


def numbered(value: Any) -> Any:
    """Names numbered per process (Task-5, Account#3, ThreadPoolExecutor-2_0), unnumbered:
    the second run's objects count on from the first's."""
    if not isinstance(value, str):
        return value
    return re.sub(r"(Task-|#|ThreadPoolExecutor-)\d+", r"\1N", value)


def described(spans: list[Any]) -> list[tuple[Any, ...]]:
    """Each span as what a user compares: everything but ids, clocks and thread numbers;
    its parent by name; in a stable order."""
    by_id = {s.context.span_id: s for s in spans}

    def values(attributes: Any) -> list[tuple[str, Any]]:
        return [(k, type(v).__name__ if k in VOLATILE else numbered(v))
                for k, v in attributes.items()]

    rows = []
    for span in spans:
        found = by_id.get(span.parent.span_id) if span.parent else None
        parent = found.name if found is not None else ("?" if span.parent else None)
        rows.append((
            numbered(span.name), span.kind, numbered(parent), span.parent is not None,
            values(span.attributes),
            [(e.name, values(e.attributes)) for e in span.events],
            [(numbered(by_id[link.context.span_id].name) if link.context.span_id in by_id
              else "?", dict(link.attributes or {})) for link in span.links],
            span.status.status_code, span.status.description,
            str(span.context.trace_state), int(span.context.trace_flags),
            span.instrumentation_scope.name, span.resource is not None,
            span.end_time >= span.start_time,
        ))
    return sorted(rows, key=repr)


@pytest.fixture
def live() -> Iterator[Any]:
    settings = shared_state.settings()
    saved = (settings.sample_rate, settings.level, settings.capture_content)
    settings.sample_rate, settings.level, settings.capture_content = 1.0, "full", True
    yield settings
    settings.sample_rate, settings.level, settings.capture_content = saved


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("make_sampler", [
    pytest.param(lambda: None, id="sdk-default"),
    pytest.param(lambda: AdjustableRateSampler(1.0), id="procscope-rate-1"),
    pytest.param(lambda: AdjustableRateSampler(0.999999), id="procscope-probability"),
])
def test_records_become_the_spans_the_sdk_path_made(
    live: Any, run: Any, make_sampler: Callable[[], Any]
) -> None:
    """Same names, kinds, parents, attributes (in order), events, links, status, trace
    state and flags, whether spans are made on the calling thread or as records."""
    sdk = run(make_sampler(), recorded=False)
    records = run(make_sampler(), recorded=True)
    assert len(sdk) > 15
    kinds = {(s.attributes or {}).get("procscope.lifecycle.kind") for s in sdk}
    assert {"thread", "task", "pool_task"} <= kinds
    assert described(records) == described(sdk)


class KeepingPlainSpans(RecordingSpanProcessor):
    """A recorder that also keeps the plain span of every record it delivers."""

    plains: list[tuple[Any, ...]] = []  # (of the latest one made)

    def __init__(self, downstream: Any) -> None:
        KeepingPlainSpans.plains = self.plains = []
        super().__init__(downstream)

    def _deliver(self, batch: list[tuple[Any, ...]]) -> None:
        self.plains.extend(record[0].plain(record) for record in batch)
        super()._deliver(batch)


def plain_workload(tracer: Any) -> None:
    """The workload, plus raw bytes through a pipe (an unlinked receive) and a span of
    the program's own kind made by the recorder's tracer: events, a link, a list value."""
    import multiprocessing

    workload(tracer)

    def annotate() -> None:
        span = trace.get_current_span()  # the thread's span, a record until it ends
        span.set_attribute("sizes", [1, 2, 3])
        span.add_event("checkpoint", {"step": 1})
        span.add_link(span.get_span_context(), {"why": "itself"})

    thread = threading.Thread(target=annotate, name="annotate")
    thread.start()
    thread.join()
    left, right = multiprocessing.Pipe()
    left.send_bytes(b"raw")
    right.recv_bytes()
    left.close()
    right.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_plain_spans_survive_marshal_and_make_the_same_spans(live: Any, run: Any) -> None:
    """Every record kind's plain span (sends, receives with links, unlinked receives,
    thread/task/state spans with events, errors) goes through marshal unchanged, and the
    ReadableSpan made from it is the span the recorder delivered."""
    import marshal

    from procscope.core.recorded import (
        P_ATTRIBUTES,
        P_EVENTS,
        P_KIND,
        P_LINKS,
        P_NAME,
        P_SPAN_ID,
        P_STATUS_CODE,
        readable_from_plain,
    )

    all_spans = run(AdjustableRateSampler(0.999999), True, plain_workload, KeepingPlainSpans)
    plains = KeepingPlainSpans.plains
    recorded = {p[P_SPAN_ID] for p in plains}
    spans = [s for s in all_spans if s.context.span_id in recorded]
    assert len(plains) == len(spans) > 15
    for plain in plains:
        assert marshal.loads(marshal.dumps(plain)) == plain
    names = {(p[P_NAME], p[P_KIND]) for p in plains}
    assert any(name.startswith("recv_bytes ") and kind == 4 for name, kind in names)  # unlinked
    assert any(p[P_LINKS] for p in plains)
    assert any(p[P_EVENTS] for p in plains)
    assert any(p[P_STATUS_CODE] == 2 and p[P_EVENTS][-1][0] == "exception" for p in plains)
    assert all(type(p[P_ATTRIBUTES]) is dict for p in plains)
    annotated = [p for p in plains if p[P_ATTRIBUTES].get("sizes")]
    assert [(p[P_ATTRIBUTES]["sizes"], p[P_EVENTS][0][:2], p[P_LINKS][0][4])
            for p in annotated] == [((1, 2, 3), ("checkpoint", {"step": 1}), {"why": "itself"})]
    by_id = {s.context.span_id: s for s in spans}
    remade = [readable_from_plain(marshal.loads(marshal.dumps(p)), by_id[p[P_SPAN_ID]].resource,
                                  by_id[p[P_SPAN_ID]].instrumentation_scope) for p in plains]
    assert described(remade) == described(spans)


@pytest.mark.parametrize(("most", "longest"), [(None, None), (3, None), (None, 4), (128, None)])
def test_attributes_of_plain_spans_are_cleaned_as_the_sdk_cleans_them(
    most: Any, longest: Any
) -> None:
    """Whatever a program sets on a span (lists, mixed tuples, bytes, None, an object, a
    bad key, long strings, too many), the plain span holds what the SDK's
    BoundedAttributes would: the shortcut for values needing no change changes nothing."""
    from opentelemetry.attributes import BoundedAttributes

    from procscope.core.recorded import SpanRecords

    maker = SpanRecords(TracerProvider().get_tracer("tests.clean"), None)
    cases: list[dict[Any, Any]] = [
        {"a": 1, "b": 2.5, "c": "text", "d": True},
        {"list": [1, 2], "mixed": (1, "x"), "bytes": b"raw", "none": None, "t": ("p", "q")},
        {"object": object(), 5: "number key", "": "empty key", "long": "abcdefgh"},
        {f"k{n}": n for n in range(6)},
        {"nested": {"inner": [1]}, "tuple": (1.5, 2.5)},
    ]
    for values in cases:
        expected = dict(BoundedAttributes(most, dict(values), max_value_len=longest))
        cleaned = maker._clean(values, most, longest)
        assert list(cleaned.items()) == list(expected.items()), values


def queue_workload(tracer: Any) -> None:
    """One thread: a root send and receive, then a send and a receive inside a span."""
    jobs: queue.Queue[Any] = queue.Queue()
    jobs.put(1)
    jobs.get()
    with tracer.start_as_current_span("request"):
        jobs.put("two")
        jobs.get()


class CountingIds:
    """A program's own id generator: ids counted up from 1000 (a custom generator)."""

    def __init__(self) -> None:
        self.given: list[int] = []

    def _next(self) -> int:
        self.given.append(1000 + len(self.given))
        return self.given[-1]

    generate_span_id = generate_trace_id = _next

    def is_trace_id_random(self) -> bool:
        return False


@pytest.mark.parametrize("custom", [False, True], ids=["sdk-generator", "custom-generator"])
def test_records_take_their_ids_where_the_sdk_path_takes_them(
    live: Any, instrumented_run: Any, custom: bool
) -> None:
    """With the SDK's generator and the same random seed, records get the very ids the SDK
    path's spans get; with a generator of the program's, every id is one it gave."""
    import random

    def ids(recorded: bool) -> tuple[list[tuple[int, int]], list[int]]:
        generator: Any = CountingIds() if custom else None
        exporter = InMemorySpanExporter()
        provider = TracerProvider(id_generator=generator)
        processor: Any = SimpleSpanProcessor(exporter)
        if recorded:
            processor = RecordingSpanProcessor([processor])
        provider.add_span_processor(processor)
        random.seed(12)
        instrumented_run(provider, queue_workload)
        spans = sorted(exporter.get_finished_spans(), key=lambda s: s.context.span_id)
        return ([(s.context.trace_id, s.context.span_id) for s in spans],
                generator.given if custom else [])

    sdk, _ = ids(recorded=False)
    records, given = ids(recorded=True)
    assert len(records) == 5
    assert records == sdk
    if custom:
        assert {span_id for _, span_id in records} <= set(given)
