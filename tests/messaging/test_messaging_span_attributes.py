"""What the spans carry however they are made: content text, limits, samplers, process.pid."""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from procscope.core.saferepr import safe_repr
from procscope.instrumentation.messaging import MessagingInstrumentor
from procscope.instrumentation.messaging._content import content_repr


class _Secretive:
    def __repr__(self) -> str:
        return "Secretive()"


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _Str(str):
    def __repr__(self) -> str:
        return "custom"


CONTENTS = [
    0, -7, 10**59, 10**60, 10**80, 3.5, float("nan"), True, None, "", "x" * 40, "é'\"\n",
    "y" * 199, "y" * 200, "y" * 201, "'" * 150, b"", b"\x00\xff" * 30, b"z" * 300,
    {}, {"job": 17, "payload": "x" * 40}, {"password": "hunter2", "user": "ann"},
    {"API_KEY": 1, "token": None, "n": 2.5}, {i: i for i in range(3)},
    {f"k{i}": i for i in range(16)}, {f"k{i}": i for i in range(17)}, {"nested": {"a": 1}},
    [], [1, "two", 3.0, None], list(range(16)), list(range(17)), (), (1,), ("a", b"b"),
    tuple(range(17)), [[1]], {"s": _Str("v")}, [_Secretive()], {"bad": _BadRepr()},
    _BadRepr(), {"long": "w" * 300}, ["v" * 100] * 3, _Str("plain"), {1, 2},
    ("Authorization", "Bearer abcdefgh12"), ("password", 1), ["user=ann&password=pw"],
    "postgres://u:pw@h/x", 4111111111111111, {"card": "4111-1111-1111-1111"},
]


@pytest.mark.parametrize("value", CONTENTS, ids=range(len(CONTENTS)))
def test_recorded_content_is_exactly_safe_repr(value: Any) -> None:
    """The short cut for plain messages gives the very text safe_repr gives."""
    assert content_repr(value) == safe_repr(value, 256)


def _send_and_receive(provider: TracerProvider) -> tuple[Any, Any]:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = MessagingInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        q: queue.Queue[Any] = queue.Queue()
        q.put({"job": 1, "note": "n" * 100})
        q.get()
    finally:
        instrumentor.uninstrument()
    kinds = {span.kind: span for span in exporter.get_finished_spans()}
    return kinds[SpanKind.PRODUCER], kinds[SpanKind.CONSUMER]


def test_span_limits_still_apply_to_every_attribute(live_settings: Any) -> None:
    """A value length limit truncates recorded values, as for any attribute."""
    limits = SpanLimits(max_attribute_length=12)
    send, receive = _send_and_receive(TracerProvider(span_limits=limits))
    assert send.attributes["procscope.messaging.content"] == "{'job': 1, '"
    assert len(send.attributes["messaging.message.id"]) == 12
    assert receive.attributes["procscope.messaging.sender.thread.name"] == "MainThread"
    assert receive.attributes["messaging.operation.type"] == "receive"


class _ByDestination(Sampler):
    """A sampler that decides by the messaging attributes it is given at span start."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "by destination"


def test_a_sampler_that_may_read_attributes_gets_the_sampling_relevant_ones(
    live_settings: Any,
) -> None:
    """A custom sampler sees system, operation and destination when the span starts."""
    sampler = _ByDestination()
    send, receive = _send_and_receive(TracerProvider(sampler=sampler))
    assert [seen["messaging.operation.type"] for seen in sampler.seen] == ["send", "receive"]
    for seen in sampler.seen:
        assert seen["messaging.system"] == "python_queue"
        assert seen["messaging.destination.name"] == send.attributes["messaging.destination.name"]
    assert send.attributes["messaging.message.id"] == receive.attributes["messaging.message.id"]


def test_the_sdk_samplers_get_the_same_spans(live_settings: Any) -> None:
    """With the SDK's samplers (which read no attributes) the spans carry the same keys."""
    custom = _send_and_receive(TracerProvider(sampler=_ByDestination()))
    sdk = _send_and_receive(TracerProvider(sampler=ALWAYS_ON))
    for ours, theirs in zip(sdk, custom):
        assert set(ours.attributes) == set(theirs.attributes)
        for key in ("messaging.system", "messaging.operation.name", "thread.name"):
            assert ours.attributes[key] == theirs.attributes[key]


def _child_spans(provider: TracerProvider, exporter: InMemorySpanExporter, pipe: Any) -> None:
    exporter.clear()
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    q.get()
    pipe.send([(dict(s.attributes), os.getpid()) for s in exporter.get_finished_spans()])


def test_process_pid_is_on_spans_only_where_the_resource_lacks_it(live_settings: Any) -> None:
    """The resource's own pid is not repeated per span; a forked child's spans carry theirs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = MessagingInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        q: queue.Queue[int] = queue.Queue()
        q.put(1)
        q.get()
        here = exporter.get_finished_spans()
        assert len(here) == 2 and all("process.pid" not in s.attributes for s in here)
        ours, theirs = multiprocessing.get_context("fork").Pipe()
        child = multiprocessing.get_context("fork").Process(
            target=_child_spans, args=(provider, exporter, theirs))
        child.start()
        spans = ours.recv()
        child.join(10)
    finally:
        instrumentor.uninstrument()
    assert child.exitcode == 0 and len(spans) == 2
    assert all(attributes["process.pid"] == pid != os.getpid() for attributes, pid in spans)


def test_puts_outside_any_trace_start_traces_at_the_sample_rate(live_settings: Any) -> None:
    """A put with no current span is traced with the live rate's probability, its draw kept."""
    from opentelemetry import context

    from procscope._sampler import AdjustableRateSampler

    live_settings.sample_rate = 0.25
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=AdjustableRateSampler(0.25))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = MessagingInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    token = context.attach(context.Context())
    try:
        q: queue.Queue[int] = queue.Queue()
        for i in range(2000):
            q.put(i)
            context.attach(context.Context())  # (the get attached a sampled message's context)
            q.get()
            context.attach(context.Context())
    finally:
        context.detach(token)
        instrumentor.uninstrument()
    sends = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert 400 <= len(sends) <= 600  # 500 expected; 5 standard deviations are about 100
    for span in sends:
        assert span.parent is None
        assert "rv:" in (span.context.trace_state.get("ot") or "")  # the gate's own draw
        assert span.attributes["procscope.sampling.probability"] == 0.25
