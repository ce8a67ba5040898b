"""A trace DB as OTLP JSON: ``ExportTraceServiceRequest`` objects, one a line.

The OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
``resourceSpans`` / ``scopeSpans`` / ``spans``, trace and span ids as hex (not base64),
64-bit integers (times in nanoseconds, int attributes) as decimal strings, enums as
numbers, attributes as ``{"key", "value": AnyValue}``. Resources and scopes are rebuilt
from the DB's ``resources`` and ``scopes`` tables.

The file is in JSON lines, OpenTelemetry's file exporter format
(https://opentelemetry.io/docs/specs/otel/protocol/file-exporter/), one request a line,
which the Collector's ``otlpjsonfile`` receiver (what ``otel-tui --from-json-file``
runs) and Jaeger UI's upload read; a small run fits one line, a plain JSON document.

Streaming: spans are read in start order and kept in one buffer per (resource, scope);
a buffer of :data:`LINE_BYTES` is written out as a line (a request) of its own, so a
resource may appear in several lines, and memory stays bounded (:data:`BUFFERED_BYTES`).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from typing import IO, Any

from procscope.exporters.tracedb._query import KINDS, STATUSES, SpanRecord, json_object

# A line (one request) is written once its spans reach this many bytes of JSON: the
# Collector's file receiver (which otel-tui uses to read a file) reads lines of up to
# 1 MiB by default.
LINE_BYTES = 256 * 1024
# Past this many bytes buffered in all, the largest buffer is written out.
BUFFERED_BYTES = 8 * 1024 * 1024
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
                entry["resource"]["attributes"] = attributes(json_object(row[0]))
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
                    entry["scope"]["attributes"] = attributes(json_object(row[3]))
                if row[2]:
                    entry["schemaUrl"] = row[2]
            self.scopes[key] = entry
        return self.scopes[key]


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_Key = tuple[int | None, str | None, str | None]  # resource id, scope name and version


class OtlpJsonWriter:
    """Writes ExportTraceServiceRequests to a text file, one a line, as it is given spans."""

    def __init__(self, out: IO[str], conn: sqlite3.Connection) -> None:
        self.out = out
        self.catalog = _Catalog(conn)
        self.buffers: dict[_Key, list[str]] = {}
        self.sizes: dict[_Key, int] = {}
        self.buffered = 0
        self.lines = 0
        self.spans = 0

    def write_spans(self, spans: Iterable[SpanRecord]) -> None:
        for span in spans:
            key = (span.resource_id, span.scope_name, span.scope_version)
            text = _dump(span_json(span))
            self.buffers.setdefault(key, []).append(text)
            self.sizes[key] = self.sizes.get(key, 0) + len(text)
            self.buffered += len(text)
            self.spans += 1
            if self.sizes[key] >= LINE_BYTES:
                self._flush(key)
            elif self.buffered >= BUFFERED_BYTES:
                self._flush(max(self.sizes, key=self.sizes.__getitem__))
        # What is left goes into as few lines as fit: a small run is one JSON document.
        line: list[_Key] = []
        size = 0
        for key in sorted(self.buffers, key=lambda k: (k[0] or 0, k[1] or "", k[2] or "")):
            if line and size + self.sizes[key] > LINE_BYTES:
                self._write_line(line)
                line, size = [], 0
            line.append(key)
            size += self.sizes[key]
        if line or not self.lines:
            self._write_line(line)

    def _flush(self, key: _Key) -> None:
        self._write_line([key])

    def _write_line(self, keys: list[_Key]) -> None:
        """One request: the buffers of ``keys``, grouped by resource (given in order)."""
        entries: list[str] = []
        for index, key in enumerate(keys):
            buffer = self.buffers.pop(key)
            self.buffered -= self.sizes.pop(key)
            scope = _dump(self.catalog.scope(key[1], key[2]))[:-1]  # without its last brace
            scope_spans = f'{scope},"spans":[{",".join(buffer)}]}}'
            if index and keys[index - 1][0] == key[0]:
                entries[-1] = entries[-1][:-2] + "," + scope_spans + "]}"
            else:
                resource = _dump(self.catalog.resource(key[0]))[:-1]
                entries.append(f'{resource},"scopeSpans":[{scope_spans}]}}')
        self.out.write('{"resourceSpans":[' + ",".join(entries) + "]}\n")
        self.lines += 1


def write_otlp_json(spans: Iterable[SpanRecord], out: IO[str], conn: sqlite3.Connection) -> int:
    """Write ``spans`` to ``out`` as OTLP JSON lines; returns the span count."""
    writer = OtlpJsonWriter(out, conn)
    writer.write_spans(spans)
    return writer.spans
