"""Events added the short way are exactly the SDK's; the public add_event wherever not provable;
calls in an unsampled trace are decided once and resynchronise only after a real assignment."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Span, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from procscope.instrumentation.state import StateInstrumentor, _events, trace_state


def _counter_class() -> type:
    """A fresh traced class: one field, a method that changes it, one that does not."""

    @trace_state
    class Counter:
        def __init__(self) -> None:
            self.n = 0
            self.note = "x"

        def bump(self) -> int:
            self.n += 1
            return self.n

        def peek(self) -> int:
            return self.n

        def scribble(self, text: str) -> None:
            self.note = text

    return Counter


def _exported_shape(event: Any) -> tuple[Any, ...]:
    """Everything an exporter or a reader can see of an event, but its time and lock."""
    attributes = event.attributes
    own = {k: v for k, v in vars(attributes).items() if k not in ("_lock", "_dict")}
    return (
        type(event),
        sorted(k for k in vars(event) if k != "_timestamp"),
        event.name,
        type(attributes),
        own,
        [(k, type(v), v) for k, v in attributes.items()],
        event.dropped_attributes,
    )


def _public_twin(recorder: Any, event: Any) -> Any:
    """The same event added through the SDK's public Span.add_event, as exported."""
    with recorder.tracer.start_as_current_span("twin") as span:
        span.add_event(event.name, dict(event.attributes))
    twin = [s for s in recorder.spans() if s.name == "twin"][-1]
    return twin.events[0]


def _unsampled_span() -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(0x12, 0x34, is_remote=False, trace_flags=TraceFlags(0)))


def _change_events(recorder: Any) -> list[Any]:
    return [e for s in recorder.spans() for e in s.events if e.name == "procscope.state.change"]


def test_change_event_is_exactly_what_sdk_add_event_makes(recorder: Any) -> None:
    """A change event on an SDK span equals, type for type, the one Span.add_event makes."""
    counter = _counter_class()()
    with recorder.tracer.start_as_current_span("request") as span:
        counter.bump()
    assert _events._FAST_TYPES.get(type(span)) is True  # the short way was taken
    (event,) = _change_events(recorder)
    assert dict(event.attributes)["procscope.state.values"] == ("1",)
    assert _exported_shape(event) == _exported_shape(_public_twin(recorder, event))
    try:
        event.attributes["procscope.state.values"] = ("2",)  # type: ignore[index]
    except TypeError:
        pass  # immutable, as the SDK's own event attributes are
    else:
        raise AssertionError("event attributes should be immutable")


def test_snapshot_event_is_exactly_what_sdk_add_event_makes(recorder: Any) -> None:
    """The snapshot taken when tracing starts is the SDK's event too (here in a user span)."""
    with recorder.tracer.start_as_current_span("request"):
        obj = trace_state(type("Box", (), {})(), name="box")
        obj.size = 3
    (snapshot,) = [e for s in recorder.spans() for e in s.events if "snapshot" in e.name]
    assert _exported_shape(snapshot) == _exported_shape(_public_twin(recorder, snapshot))


def test_attribute_length_limit_takes_public_add_event(live_settings: Any) -> None:
    """Span limits that would truncate values: the SDK's own add_event truncates them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_attribute_length=4))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = StateInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        counter = _counter_class()()
        with provider.get_tracer("t").start_as_current_span("request"):
            counter.scribble("a long note indeed")
    finally:
        instrumentor.uninstrument()
    (event,) = [e for s in exporter.get_finished_spans() for e in s.events if "change" in e.name]
    attributes = dict(event.attributes)
    assert attributes["procscope.state.values"] == ("'a l",)
    assert attributes["procscope.state.method"] == "scri"
    assert attributes["procscope.state.old_values"] == ("'x'",)  # short enough: kept


def test_span_class_overriding_add_event_gets_public_calls(recorder: Any) -> None:
    """A span subclass with its own add_event is always called through it."""
    calls: list[str] = []

    class AuditedSpan(Span):
        def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
            calls.append(name)
            super().add_event(name, attributes, timestamp)

    context = SpanContext(0xAB, 0xCD, is_remote=False, trace_flags=TraceFlags(1))
    span = AuditedSpan("audited", context)
    counter = _counter_class()()
    with trace.use_span(span, end_on_exit=False):
        counter.bump()
        counter.bump()
    assert calls == ["procscope.state.change", "procscope.state.change"]
    assert [dict(e.attributes)["procscope.state.values"] for e in span.events] == [("1",), ("2",)]


def test_sdk_internals_not_recognised_take_public_add_event(
    recorder: Any, monkeypatch: Any
) -> None:
    """If the SDK's add_event code differs from what was replicated, the public one runs."""
    monkeypatch.setitem(_events._EXPECTED_NAMES, "Span.add_event", {"something", "else"})
    monkeypatch.setattr(_events, "_replicable_once", [])
    monkeypatch.setattr(_events, "_FAST_TYPES", {})
    assert _events._replicable() is False
    counter = _counter_class()()
    with recorder.tracer.start_as_current_span("request") as span:
        counter.bump()
    assert _events._FAST_TYPES.get(type(span)) is False
    (event,) = _change_events(recorder)
    assert dict(event.attributes)["procscope.state.values"] == ("1",)
    assert _exported_shape(event) == _exported_shape(_public_twin(recorder, event))


def test_span_ended_during_the_call_gets_a_span_of_ours(recorder: Any, caplog: Any) -> None:
    """A change whose span ended before the call returned is recorded on a new span."""
    counter = _counter_class()()
    outer = recorder.tracer.start_span("ends-early")
    with caplog.at_level(logging.WARNING), trace.use_span(outer, end_on_exit=False):
        counter.peek()
        outer.end()
        counter.bump()
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]
    (event,) = _change_events(recorder)
    assert dict(event.attributes)["procscope.state.values"] == ("1",)
    (carrier,) = [s for s in recorder.spans() if event in s.events]
    assert carrier.name.endswith("Counter.bump")
    assert carrier.parent is not None and carrier.parent.span_id == outer.get_span_context().span_id


def test_unsampled_call_that_changes_nothing_needs_no_resync(recorder: Any) -> None:
    """In an unsampled trace only a real assignment makes the next change resynchronise."""
    counter = _counter_class()()
    unsampled = _unsampled_span()
    with trace.use_span(unsampled):
        assert counter.peek() == 0
        assert counter.bump() == 1  # changed unseen
        assert counter.peek() == 1
    recorder.clear()
    counter.bump()
    assert [e["event"] for e in recorder.events()] == [
        "procscope.state.change",
        "procscope.state.snapshot",
    ]
    recorder.clear()
    with trace.use_span(unsampled):
        counter.peek()
    counter.bump()
    assert [e["event"] for e in recorder.events()] == ["procscope.state.change"]
    assert recorder.changes()[0]["procscope.state.old_values"] == ("2",)


def test_unsampled_assignment_outside_fields_needs_no_resync(recorder: Any) -> None:
    """An assignment to an attribute that is not state, unsampled, makes no snapshot."""
    box = trace_state(type("Box", (), {})(), name="box", fields=["size"])
    box.size = 1
    recorder.clear()
    unsampled = _unsampled_span()
    with trace.use_span(unsampled):
        box.cache = "not state"
    box.size = 2
    assert [e["event"] for e in recorder.events()] == ["procscope.state.change"]
    with trace.use_span(unsampled):
        box.size = 3
    box.size = 4
    events = recorder.events()
    assert [e["event"] for e in events][-2:] == [
        "procscope.state.change",
        "procscope.state.snapshot",
    ]
    assert events[-1]["procscope.state.values"] == ("4",)
