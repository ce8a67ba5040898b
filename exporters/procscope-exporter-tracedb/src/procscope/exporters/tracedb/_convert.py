"""Finished spans into the rows of a batch: the exporter's own cost per span.

Used by the exporter on its own spans and by the relay's owner on a child's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind

from . import _schema
from ._writer import Batch, Writer, _c_encode, encode_attributes

_join = "".join

_SCALAR = (str, int, float)


def _kind_value(kind: object) -> int:
    """A span kind that is not a SpanKind (some callers pass a bare int)."""
    value = getattr(kind, "value", kind)
    return value if isinstance(value, int) else 0


_READABLE_PROPERTIES = (
    "name", "context", "kind", "parent", "start_time", "end_time", "attributes", "events",
    "links", "resource", "status", "instrumentation_scope",
)  # fmt: skip
_FAST_TYPES: dict[type, bool] = {}
_UNSET = object()


def _reads_private_fields(cls: type) -> bool:
    """True when ``cls`` keeps ReadableSpan's own properties, so that its private fields
    hold exactly what the properties return (the SDK's spans; read ~10x faster)."""
    fast = _FAST_TYPES.get(cls)
    if fast is None:
        fast = all(
            getattr(cls, prop, None) is getattr(ReadableSpan, prop) for prop in _READABLE_PROPERTIES
        )
        _FAST_TYPES[cls] = fast
    return fast


def _plain(attributes: Any) -> dict[str, Any] | None:
    """Attributes as a plain dict (the SDK's BoundedAttributes keeps one inside)."""
    if not attributes:
        return None
    if type(attributes) is dict:
        return attributes
    inner = getattr(attributes, "_dict", None)
    if type(inner) is dict:
        return inner
    return dict(attributes)


def spans_to_batch(
    spans: Sequence[ReadableSpan], writer: Writer, pid: int, process_name: str
) -> Batch:
    """The rows of a batch of finished spans (row ids relative to the batch).

    This loop is the exporter's own cost per span, so it reads the SDK's private fields
    where the span's type allows (see :func:`_reads_private_fields`), and encodes
    attributes with a prebuilt C JSON encoder.
    """
    batch = Batch()
    span_rows = batch.spans
    span_attrs = batch.span_attrs
    indexed_span_keys = _schema.INDEXED_SPAN_ATTRIBUTES
    resource_id = writer.resource_id
    scope_id = writer.scope_id
    event_index = 0
    # The batch's spans nearly always share one resource and few scopes: look ids up
    # only when the object changes.
    last_resource: Any = _UNSET
    last_scope: Any = _UNSET
    last_rid: int | None = None
    last_sid: int | None = None
    for index, span in enumerate(spans):
        if _FAST_TYPES.get(type(span)) or _reads_private_fields(type(span)):
            context = span._context
            parent = span._parent
            attributes = span._attributes
            status = span._status
            start = span._start_time or 0
            end = span._end_time
            kind = span._kind
            name = span._name
            resource = span._resource
            scope = span._instrumentation_scope
            events = span._events
            links = span._links
            # The SDK's BoundedList is truthy through a Python __len__; its deque is not.
            if type(events) is BoundedList:
                events = getattr(events, "_dq", events)
            if type(links) is BoundedList:
                links = getattr(links, "_dq", links)
        else:
            context = span.context
            parent = span.parent
            attributes = span.attributes
            status = span.status
            start = span.start_time or 0
            end = span.end_time
            kind = span.kind
            name = span.name
            resource = span.resource
            scope = span.instrumentation_scope
            events = span.events
            links = span.links
        if context is None:
            continue
        span_id = context.span_id
        if span_id >= 0x8000000000000000:
            span_id -= 0x10000000000000000
        if parent is None:
            parent_id = None
        else:
            parent_id = parent.span_id
            if parent_id >= 0x8000000000000000:
                parent_id -= 0x10000000000000000
        plain = attributes._dict if type(attributes) is BoundedAttributes else _plain(attributes)
        if resource is last_resource:
            rid = last_rid
        else:
            rid = last_rid = resource_id(resource)
            last_resource = resource
        if scope is last_scope:
            sid = last_sid
        else:
            sid = last_sid = scope_id(scope)
            last_scope = scope
        span_rows.append(
            (
                index,
                context.trace_id.to_bytes(16, "big"),
                span_id,
                parent_id,
                name,
                kind._value_ if type(kind) is SpanKind else _kind_value(kind),
                start,
                end or start,
                status.status_code._value_ if status is not None else 0,
                status.description if status is not None else None,
                encode_attributes(plain) if plain else None,
                rid,
                sid,
                pid,
                process_name,
            )
        )
        if plain:
            _index(span_attrs, indexed_span_keys, plain, index)
        if events:
            event_index = _add_events(batch, events, index, event_index)
        if links:
            _add_links(batch, links, index)
    return batch


def _index(rows: list[Any], keys: Any, attributes: dict[str, Any], row: int) -> None:
    """The index rows (key, value, row) of the indexed keys ``attributes`` has a scalar for."""
    for key in keys:
        value = attributes.get(key)
        if value is not None and isinstance(value, _SCALAR):
            rows.append((key, value, row))


def _add_events(batch: Batch, events: Any, span_index: int, event_index: int) -> int:
    return _add_plain_events(
        batch, [(e.name, _plain(e.attributes), e.timestamp) for e in events], span_index,
        event_index,
    )


def _add_links(batch: Batch, links: Any, span_index: int) -> None:
    for link in links:
        linked_id = link.context.span_id
        if linked_id >= 0x8000000000000000:
            linked_id -= 0x10000000000000000
        attributes = _plain(link.attributes)
        batch.links.append(
            (
                span_index,
                link.context.trace_id.to_bytes(16, "big"),
                linked_id,
                encode_attributes(attributes) if attributes else None,
            )
        )


def plain_to_batch(
    plains: Sequence[tuple[Any, ...]], writer: Writer, pid: int, process_name: str,
    resource: Any, scope: Any, batch: Batch | None = None,
) -> Batch:
    """The rows of plain spans (``procscope.core.recorded``'s ``P_*`` tuples) of one
    ``resource`` and instrumentation ``scope``: exactly the rows :func:`spans_to_batch`
    gives for the ReadableSpans made of them (same order, same JSON text, same index
    rows), without making those. ``batch``: add to it (row ids going on from its own)."""
    ids = (writer.resource_id(resource), writer.scope_id(scope))
    return _plain_rows(plains, repeat(ids), pid, process_name,
                       Batch() if batch is None else batch)  # fmt: skip


def plain_rows_with_ids(
    plains: Sequence[tuple[Any, ...]], ids: tuple[int | None, int | None], pid: int,
    process_name: str,
) -> Batch:
    """:func:`plain_to_batch` for a (resource id, scope id) pair already stored: a staged
    flight recording's, made into spans by another process (_staging.py)."""
    return _plain_rows(plains, repeat(ids), pid, process_name, Batch())


def origins_to_batch(
    items: Sequence[tuple[tuple[Any, ...], tuple[Any, Any]]], writer: Writer, pid: int,
    process_name: str,
) -> Batch:
    """The rows of (plain span, (resource, scope)) pairs, as procscope's recorder gives
    them to a record sink: :func:`plain_to_batch` of each, in one batch, in order."""
    ids = origin_ids(items, writer)
    return _plain_rows([plain for plain, _ in items], ids, pid, process_name, Batch())


def origin_ids(
    items: Sequence[tuple[tuple[Any, ...], tuple[Any, Any]]], writer: Writer
) -> list[tuple[int | None, int | None]]:
    """The (resource id, scope id) of each (plain span, (resource, scope)) pair: stored
    when new, so call it under the write lock."""
    known: dict[int, tuple[Any, tuple[int | None, int | None]]] = {}
    ids = []
    for _, origin in items:
        # Few origins (a tracer's record kinds share one pair): looked up once each.
        found = known.get(id(origin))
        if found is None:
            resource, scope = origin
            found = known[id(origin)] = (
                origin, (writer.resource_id(resource), writer.scope_id(scope))
            )
        ids.append(found[1])
    return ids


def numbered_batch(
    plains: Sequence[tuple[Any, ...]], writer: Writer, pid: int, process_name: str,
    resource: Any, scope: Any,
) -> Batch:
    """:func:`plain_to_batch`'s rows numbered from ``writer``'s next free ids (a
    ``Batch.numbered``, which the writer copies no more): call it under the write lock, as
    a :meth:`Writer.write` ``build``. A flight recorder dump's route: large batches of one
    resource and scope. An index key whose value is the same for every span of a large
    batch is written as one range (``Batch.span_attr_ranges``), not a row a span."""
    ids = (writer.resource_id(resource), writer.scope_id(scope))
    batch = _plain_rows(plains, repeat(ids), pid, process_name, Batch(numbered=True),
                        first=writer.span_base, first_event=writer.event_base)  # fmt: skip
    if len(batch.spans) >= RANGE_MIN_SPANS:
        _take_ranges(batch, writer.span_base)
    return batch


# A batch this large has its index keys that every span shares written as ranges.
RANGE_MIN_SPANS = 64


def _take_ranges(batch: Batch, first: int) -> None:
    """Moves the index rows of a key that every span of ``batch`` (numbered from ``first``)
    has, with one value, into a range: SQLite then makes those rows itself, from the spans
    just inserted (a dump's ``process.pid``, and the queue's name when it used one): about
    a tenth of its time writing a dump, less the Python tuples."""
    rows = batch.span_attrs
    spans = len(batch.spans)
    keys = list(map(itemgetter(0), rows))
    backwards = keys[::-1]
    last = first + spans - 1
    full = set()
    for key, count in Counter(keys).items():
        if count != spans:
            continue
        if rows[keys.index(key)][1] != rows[-1 - backwards.index(key)][1]:
            continue  # (its first and last values differ: a message id, say)
        # (The value's type is part of it: 1 and 1.0 are equal keys, stored apart.)
        distinct = {(type(value), value) for name, value, _pk in rows if name == key}
        if len(distinct) == 1:
            ((kind, value),) = distinct
            if kind is float:
                continue  # (0.0 and -0.0 are equal: left as rows)
            batch.span_attr_ranges.append((key, value, first, last))
            full.add(key)
    if full:
        batch.span_attrs = [row for row in rows if row[0] not in full]


def _plain_rows(
    plains: Iterable[tuple[Any, ...]], ids: Iterable[tuple[int | None, int | None]], pid: int,
    process_name: str, batch: Batch, first: int | None = None, first_event: int | None = None,
) -> Batch:
    """Adds the rows of ``plains`` to ``batch``, each with its (resource id, scope id),
    numbered on from the batch's own rows, or from ``first`` and ``first_event``."""
    span_rows = batch.spans
    add_index = batch.span_attrs.append
    indexed_span_keys = _schema.INDEXED_SPAN_ATTRIBUTES
    index = len(span_rows) if first is None else first
    event_index = len(batch.events) if first_event is None else first_event
    append = span_rows.append
    encode = _c_encode
    last_trace: Any = None
    trace_bytes = b""
    for (name, kind, trace_id, span_id, parent_id, _remote, _flags, _state, start, end,
         code, description, attributes, events, links, _parent_flags), (rid, sid) in zip(
            plains, ids):
        if trace_id != last_trace:  # (runs of spans share a trace: converted once)
            last_trace, trace_bytes = trace_id, trace_id.to_bytes(16, "big")
        if span_id >= 0x8000000000000000:
            span_id -= 0x10000000000000000
        if not parent_id:
            parent_id = None
        elif parent_id >= 0x8000000000000000:
            parent_id -= 0x10000000000000000
        text = None
        if attributes:
            # encode_attributes and _index, inline (a dump makes hundreds of thousands).
            if encode is not None and type(attributes) is dict:
                try:
                    text = _join(encode(attributes, 0))
                except ValueError:  # a NaN or infinity: encode_attributes spells them
                    text = encode_attributes(attributes)
            else:
                text = encode_attributes(attributes)
            get = attributes.get
            for key in indexed_span_keys:
                value = get(key)
                if value is not None and isinstance(value, _SCALAR):
                    add_index((key, value, index))
        append((
            index, trace_bytes, span_id, parent_id, name, kind, start or 0, end or start or 0,
            code, description, text, rid, sid, pid, process_name,
        ))  # fmt: skip
        if events:
            event_index = _add_plain_events(batch, events, index, event_index)
        if links:
            for trace, linked_id, _flags, _state, values, _remote in links:
                if linked_id >= 0x8000000000000000:
                    linked_id -= 0x10000000000000000
                batch.links.append((index, trace.to_bytes(16, "big"), linked_id,
                                    encode_attributes(values) if values else None))
        index += 1
    return batch


def _add_plain_events(batch: Batch, events: Any, span_index: int, event_index: int) -> int:
    """:func:`_add_events` for a plain span's (name, attributes, time) tuples."""
    indexed_event_keys = _schema.INDEXED_EVENT_ATTRIBUTES
    for name, attributes, when in events:
        batch.events.append((event_index, span_index, name, when,
                             encode_attributes(attributes) if attributes else None))
        if attributes:
            _index(batch.event_attrs, indexed_event_keys, attributes, event_index)
        event_index += 1
    return event_index
