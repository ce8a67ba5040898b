"""procscope's trace DB: a SQLite span exporter and the queries over it.

``TraceDBSpanExporter`` writes finished spans (from any number of processes) into one
SQLite file; ``TraceDB`` reads it. See docs/tracedb.md.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "EventRecord",
    "Happening",
    "LinkRecord",
    "LossRecord",
    "Run",
    "SpanNode",
    "SpanRecord",
    "TimelineEntry",
    "TraceDB",
    "TraceDBError",
    "TraceDBSpanExporter",
    "TraceSummary",
    "TraceTree",
    "UnknownActorError",
    "UnknownRunError",
    "actor_name",
    "index_attributes",
    "span_actor",
]

from ._actors import actor_name, span_actor
from ._db import LossRecord, TraceDB
from ._exporter import TraceDBSpanExporter
from ._query import (
    EventRecord,
    Happening,
    LinkRecord,
    SpanNode,
    SpanRecord,
    TraceSummary,
    TraceTree,
)
from ._runs import Run, UnknownRunError
from ._schema import SCHEMA_VERSION, TraceDBError, index_attributes
from ._timeline import TimelineEntry, UnknownActorError
