"""Fixtures for the state instrumentor's tests.

``recorder``: the instrumentor switched on with an SDK provider and an in-memory exporter
(events read back as plain dicts). ``tracedb``: the same into a real SQLite trace DB file,
with a ``flush()`` that returns an opened TraceDB. Each test gets the instrumentor fresh
and leaves it off, with the live settings as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from procscope.core import shared_state
from procscope.core.recorder import RecordingSpanProcessor
from procscope.instrumentation.state import StateInstrumentor


class Recorder:
    """What the instrumentor recorded, as (span name, event name, attributes) rows."""

    def __init__(self, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.exporter = exporter
        self.provider = provider
        self.tracer = provider.get_tracer("tests.state")

    def spans(self) -> list[Any]:
        self.provider.force_flush()  # the recorder's records first (the documented flush)
        return list(self.exporter.get_finished_spans())

    def events(self, name: str | None = None, obj: str | None = None) -> list[dict[str, Any]]:
        found = []
        for span in sorted(self.spans(), key=lambda s: s.start_time or 0):
            for event in span.events:
                if name is not None and event.name != name:
                    continue
                attributes = dict(event.attributes or {})
                if obj is not None and attributes.get("procscope.state.object") != obj:
                    continue
                found.append(
                    {"span": span.name, "event": event.name, "time": event.timestamp, **attributes}
                )
        found.sort(key=lambda e: e["time"])
        return found

    def changes(self, obj: str | None = None) -> list[dict[str, Any]]:
        return self.events("procscope.state.change", obj)

    def clear(self) -> None:
        self.provider.force_flush()  # (records still on their way are cleared too)
        self.exporter.clear()


@pytest.fixture
def live_settings() -> Iterator[Any]:
    """The process's live settings, restored after the test."""
    live = shared_state.settings()
    saved = (live.capture_content, live.sample_rate, live.level)
    yield live
    live.capture_content, live.sample_rate, live.level = saved


def _instrument(provider: TracerProvider, **kwargs: Any) -> StateInstrumentor:
    instrumentor = StateInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider, **kwargs)
    return instrumentor


@pytest.fixture
def recorder(live_settings: Any) -> Iterator[Recorder]:
    """The state instrumentor on, recording into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RecordingSpanProcessor([SimpleSpanProcessor(exporter)]))
    instrumentor = _instrument(provider)
    yield Recorder(exporter, provider)
    instrumentor.uninstrument()
    provider.shutdown()


@pytest.fixture
def make_recorder(live_settings: Any) -> Iterator[Any]:
    """Like ``recorder``, with instrument() keywords of the test's choice."""
    made: list[tuple[StateInstrumentor, TracerProvider]] = []

    def make(**kwargs: Any) -> Recorder:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(RecordingSpanProcessor([SimpleSpanProcessor(exporter)]))
        made.append((_instrument(provider, **kwargs), provider))
        return Recorder(exporter, provider)

    yield make
    for instrumentor, provider in made:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        provider.shutdown()


class DBRecorder:
    """The instrumentor recording into a real trace DB file."""

    def __init__(self, path: str, provider: TracerProvider) -> None:
        self.path = path
        self.provider = provider
        self.tracer = provider.get_tracer("tests.state")

    def flush(self) -> Any:
        from procscope.exporters.tracedb import TraceDB

        self.provider.force_flush()
        return TraceDB(self.path)


@pytest.fixture
def tracedb(tmp_path: Any, live_settings: Any) -> Iterator[DBRecorder]:
    """The state instrumentor on, exporting to ``tmp_path/trace.db`` (SimpleSpanProcessor)."""
    from procscope.exporters.tracedb import TraceDBSpanExporter

    path = str(tmp_path / "trace.db")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(TraceDBSpanExporter(path)))
    instrumentor = _instrument(provider, snapshot_every=5)
    yield DBRecorder(path, provider)
    instrumentor.uninstrument()
    provider.shutdown()
