"""OpenTelemetry as a user sets it up without procscope: the SDK's tracer provider with a
BatchSpanProcessor, and contrib's threading and asyncio instrumentors at their defaults.

Imported by peer_workloads.py under ``PEERS_SETUP=otel``, in the peers' virtualenv only
(procscope's virtualenv has no contrib instrumentors). The exporter keeps a count of the
spans it is given and drops them: the batch processor does all its usual work, and no
serialisation or I/O of one exporter or another is measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)


class CountingExporter(SpanExporter):
    """Counts the spans exported, keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


_exporter = CountingExporter()
_provider = TracerProvider()


def setup() -> None:
    _provider.add_span_processor(BatchSpanProcessor(_exporter))
    trace.set_tracer_provider(_provider)
    ThreadingInstrumentor().instrument()
    AsyncioInstrumentor().instrument()


@contextlib.contextmanager
def root_span() -> Iterator[None]:
    with trace.get_tracer("peers").start_as_current_span("workload"):
        yield


def finish() -> int:
    """Flush and return the number of spans the exporter received."""
    _provider.force_flush()
    return _exporter.spans
