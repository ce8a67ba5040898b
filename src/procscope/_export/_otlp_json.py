"""A trace DB as OTLP JSON: one ``ExportTraceServiceRequest``, written span by span.

The OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
``resourceSpans`` / ``scopeSpans`` / ``spans``, trace and span ids as hex (not base64),
64-bit integers (times in nanoseconds, int attributes) as decimal strings, enums as
numbers, attributes as ``{"key", "value": AnyValue}``. Resources and scopes are rebuilt
from the DB's ``resources`` and ``scopes`` tables.

The whole request is one line of JSON, so that both readers of a JSON document (Jaeger
UI's upload) and readers of JSON lines (the Collector's file format, otel-tui) take it.

Streaming: spans are read in start order and kept in one buffer per (resource, scope);
a buffer of :data:`BLOCK` spans is written out as a ``resourceSpans`` entry of its own,
so a resource may appear in several entries (OTLP allows it) and memory stays bounded.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from typing import IO, Any

from procscope.exporters.tracedb._query import KINDS, STATUSES, SpanRecord

BLOCK = 1000
# OTLP's SpanKind is the SDK's plus one (0 is SPAN_KIND_UNSPECIFIED).
_KIND = {name: index + 1 for index, name in enumerate(KINDS)}
_STATUS = {name: index for index, name in enumerate(STATUSES)}
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def any_value(value: Any) -> dict[str, Any]:
    """An OTLP AnyValue."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        # JSON has no NaN or infinities; proto3's JSON mapping spells them as strings.
        return {"doubleValue": value if math.isfinite(value) else _NON_FINITE[str(value)]}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": attributes(value)}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": any_value(v)} for k, v in values.items()]


def span_json(span: SpanRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": _KIND.get(span.kind, 0),
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
    }
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    if span.attributes:
        out["attributes"] = attributes(span.attributes)
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.time_ns), "name": e.name, "attributes": attributes(e.attributes)}
            for e in span.events
        ]
    if span.links:
        out["links"] = [
            {
                "traceId": link.trace_id,
                "spanId": link.span_id,
                "attributes": attributes(link.attributes),
            }
            for link in span.links
        ]
    status: dict[str, Any] = {}
    if span.status_code != "UNSET":
        status["code"] = _STATUS.get(span.status_code, 0)
    if span.status_description:
        status["message"] = span.status_description
    out["status"] = status
    return out


class _Catalog:
    """Resources and scopes by id, read once each from the DB."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.resources: dict[int | None, dict[str, Any]] = {}
        self.scopes: dict[tuple[str | None, str | None], dict[str, Any]] = {}

    def resource(self, resource_id: int | None) -> dict[str, Any]:
        if resource_id not in self.resources:
            row = self.conn.execute(
                "SELECT attributes, schema_url FROM resources WHERE resource_id = ?",
                (resource_id,),
            ).fetchone()
            entry: dict[str, Any] = {"resource": {"attributes": []}}
            if row is not None:
                entry["resource"]["attributes"] = attributes(json.loads(row[0] or "{}"))
                if row[1]:
                    entry["schemaUrl"] = row[1]
            self.resources[resource_id] = entry
        return self.resources[resource_id]

    def scope(self, name: str | None, version: str | None) -> dict[str, Any]:
        """The scope by name and version (a span record carries those, not the row id)."""
        key = (name, version)
        if key not in self.scopes:
            row = self.conn.execute(
                "SELECT name, version, schema_url, attributes FROM scopes "
                "WHERE name IS ? AND version IS ? ORDER BY scope_id LIMIT 1",
                (name, version),
            ).fetchone()
            entry: dict[str, Any] = {"scope": {"name": ""}}
            if row is not None:
                entry["scope"]["name"] = row[0]
                if row[1]:
                    entry["scope"]["version"] = row[1]
                if row[3]:
                    entry["scope"]["attributes"] = attributes(json.loads(row[3]))
                if row[2]:
                    entry["schemaUrl"] = row[2]
            self.scopes[key] = entry
        return self.scopes[key]


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class OtlpJsonWriter:
    """Writes one ExportTraceServiceRequest to a text file as it is given spans."""

    def __init__(self, out: IO[str], conn: sqlite3.Connection) -> None:
        self.out = out
        self.catalog = _Catalog(conn)
        self.buffers: dict[tuple[int | None, str | None, str | None], list[str]] = {}
        self.blocks = 0
        self.spans = 0

    def write_spans(self, spans: Iterable[SpanRecord]) -> None:
        self.out.write('{"resourceSpans":[')
        for span in spans:
            key = (span.resource_id, span.scope_name, span.scope_version)
            buffer = self.buffers.setdefault(key, [])
            buffer.append(_dump(span_json(span)))
            self.spans += 1
            if len(buffer) >= BLOCK:
                self._flush(key)
        for key in list(self.buffers):
            self._flush(key)
        self.out.write("]}\n")

    def _flush(self, key: tuple[int | None, str | None, str | None]) -> None:
        buffer = self.buffers.pop(key, [])
        if not buffer:
            return
        resource = self.catalog.resource(key[0])
        scope = self.catalog.scope(key[1], key[2])
        head = _dump(resource)[:-1]  # without its closing brace
        scope_head = _dump(scope)[:-1]
        if self.blocks:
            self.out.write(",")
        self.out.write(f'{head},"scopeSpans":[{scope_head},"spans":[')
        self.out.write(",".join(buffer))
        self.out.write("]}]}")
        self.blocks += 1


def write_otlp_json(spans: Iterable[SpanRecord], out: IO[str], conn: sqlite3.Connection) -> int:
    """Write ``spans`` to ``out`` as one OTLP JSON request; returns the span count."""
    writer = OtlpJsonWriter(out, conn)
    writer.write_spans(spans)
    return writer.spans
