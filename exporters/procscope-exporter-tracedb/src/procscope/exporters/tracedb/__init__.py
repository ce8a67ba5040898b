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

from typing import TYPE_CHECKING

from procscope.core.lazy import lazy_attributes

if TYPE_CHECKING:
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

# Imported at first use: a program that only exports (every process procscope starts
# in) does not pay for the query side, and a reader does not pay for the writer's.
__getattr__ = lazy_attributes(
    __name__,
    {
        name: f"{__name__}.{module}"
        for module, names in (
            ("_actors", ("actor_name", "span_actor")),
            ("_db", ("LossRecord", "TraceDB")),
            ("_exporter", ("TraceDBSpanExporter",)),
            ("_query", ("EventRecord", "Happening", "LinkRecord", "SpanNode", "SpanRecord",
                        "TraceSummary", "TraceTree")),
            ("_runs", ("Run", "UnknownRunError")),
            ("_schema", ("SCHEMA_VERSION", "TraceDBError", "index_attributes")),
            ("_timeline", ("TimelineEntry", "UnknownActorError")),
        )
        for name in names
    },
)
