"""Messages as records: what a send or a receive appends, and the span it becomes.

Used when the tracer's provider has procscope's recorder (``procscope.core.recorder``)
and its sampler follows sampled parents without reading start attributes (see
``_core._choose_recorder``): then a message costs its caller one tuple, and the drain
thread makes the very span the SDK path would have made (same ids, parent, links,
attributes in the same order, events, status and times). Otherwise ``_core`` makes SDK
spans on the caller's thread, as before.

What can wait for the drain waits: the attribute dict is built there from a tuple of
values, links are made there, and the content of an immutable scalar message (int,
float, str, bytes...) is represented there; a mutable message's content is taken now,
since the program may change the object once it is sent.

A message record is a span record (``procscope.core.recorded``); ``S_VALUES`` holds
the values its attributes are made of, ``S_LINKED`` a receive's own ambient context (its
producer's is the record's parent).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from opentelemetry.trace import Link, NonRecordingSpan, SpanKind
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from procscope.core.recorded import (
    RANDOM_FLAG,
    S_LINKED,
    S_PARENT_FLAGS,
    S_VALUES,
    UNSET_STATUS,
    SpanRecords,
    exception_attributes,
    span_context,
    state_header,
)
from procscope.core.recorder import R_PARENT_ID, R_PARENT_REMOTE, R_STATE, R_TRACE_ID
from procscope.core.threadinfo import _active, current_thread_name

from . import _core
from ._content import content_repr
from ._core import (
    BODY_SIZE,
    CONTENT,
    MESSAGE_ID,
    PID,
    QUEUE_TYPE,
    THREAD_ID,
    THREAD_NAME,
    Profile,
    body_size,
    receive_attributes,
    runtime,
    unlinked_attributes,
)

_with_span = _core._with_span
_PRODUCER = SpanKind.PRODUCER
_CONSUMER = SpanKind.CONSUMER
_getrandbits = random.getrandbits
_time_ns = time.time_ns
_get_ident = threading.get_ident
# The content of these is the same whenever it is represented: done on the drain thread.
_IMMUTABLE = frozenset((int, float, complex, bool, str, bytes, type(None)))
_UNSET = UNSET_STATUS


# --- on the caller's thread --------------------------------------------------------------------


def new_span(name: str, kind: SpanKind) -> tuple[Any, ...] | None:
    """Ids, parent and sampling of a sampled span about to be recorded (see
    ``SpanRecords.new_span``), or None when it is not sampled."""
    ctx = _core.current_context()
    parent: Any = ctx.get(_core.SPAN_KEY) if ctx else None
    ids = runtime.spans.new_span(
        name, kind, parent.get_span_context() if parent is not None else None
    )
    return ids if ids[5] & 1 else None


class PendingSend:
    """A producer span not yet ended: ended (once) by ``end()`` or ``_core.end_with``,
    which append its record."""

    __slots__ = ("extra", "ids", "name", "start", "values")

    def __init__(self, name: str, start: int, ids: tuple[Any, ...] | None,
                 values: tuple[Any, ...]) -> None:
        self.name = name
        self.start = start
        self.ids = ids
        self.values = values
        self.extra: dict[str, Any] | None = None  # set_attribute's, after the others

    def set_attribute(self, key: str, value: Any) -> None:
        """As a span's (the send_bytes path marks its span unpropagated)."""
        if self.ids is not None:
            if self.extra is None:
                self.extra = {}
            self.extra[key] = value

    def end(self, error: tuple[Any, ...] | None = None) -> None:
        ids = self.ids
        if ids is None:
            return
        self.ids = None
        runtime.recorder.append((
            runtime.send_spans, self.start, _time_ns(), ids[0], ids[1], ids[2], ids[3], ids[5],
            ids[6], self.name, _PRODUCER, ids[7],
            self.values if self.extra is None else (*self.values, self.extra),
            error, ids[4], None,
        ))

    def end_with(self, exc: BaseException | None) -> None:
        error = None
        if exc is not None:
            error = (type(exc).__qualname__, _time_ns(), exception_attributes(exc))
        self.end(error)


def start_send(
    prof: Profile, item: object, size: int | None, local: bool
) -> tuple[Any, tuple[Any, ...] | None]:
    """_core.start_send's record path: the ids now, the span when the send ends."""
    start_ns = _time_ns()
    # new_span(), inline for the commonest case: a valid parent, which decides.
    ctx = _core.current_context()
    parent: Any = ctx.get(_core.SPAN_KEY) if ctx else None
    if parent is not None:
        parent = parent.get_span_context()
    spans = runtime.spans
    if parent is not None and parent[5]:
        parent_flags = parent[3]
        if not parent_flags & 1:
            return None, None
        ids: tuple[Any, ...] = (
            parent[0], (_getrandbits(64) or spans.new_span_id()) if spans.sdk_ids
            else spans.new_span_id(), parent[1], parent[2], parent_flags,
            1 | (parent_flags & RANDOM_FLAG), parent[4], None,
        )
    else:
        ids = spans.new_span(prof.span_name, _PRODUCER, parent)
        if not ids[5] & 1:
            return None, None
    thread_id = _core._get_native_id()
    try:  # (current_thread_name(), inline)
        thread_name = _active[_get_ident()].name
    except KeyError:
        thread_name = current_thread_name()
    message_id = f"{_getrandbits(64):016x}"
    if size is None:
        size = body_size(item)
    content = None
    if _core.live.capture_content:
        content = (item,) if type(item) in _IMMUTABLE else content_repr(item)
    pending = PendingSend(prof.span_name, start_ns, ids, (
        prof, message_id, thread_id, thread_name, _core.span_pid, size, content,
    ))
    flags = ids[5] & 0xFF
    if local:
        # (the default trace state as None: a carrier of plain values only, which the
        # garbage collector stops walking once it has seen it, and with it the receive
        # record's values that hold it; the receive makes it the default state again)
        state = ids[6]
        return pending, (
            ids[0], ids[1], flags, message_id, prof.destination, _core._pid, thread_id,
            thread_name, _time_ns(), None if state is DEFAULT_TRACE_STATE else state,
        )
    return pending, (
        ids[0], ids[1], flags, message_id, prof.destination, _core._pid, thread_id,
        thread_name, _time_ns(),
    )


def receive(
    carrier: tuple[Any, ...], parent: Any, ambient: Any, current: Any, span_name: str,
    constants: dict[str, Any], now: int, started_ns: int, size: int | None,
    task: str | None = None,
) -> None:
    """_core.receive's record path: the consumer span as a record, its context attached.
    ``ambient``: the consumer's own trace's context, to link back to, or None."""
    spans = runtime.spans
    span_id = (_getrandbits(64) or spans.new_span_id()) if spans.sdk_ids else spans.new_span_id()
    parent_flags = parent[3]
    flags = 1 | (parent_flags & RANDOM_FLAG)  # a child of a sampled producer
    state = parent[4]
    try:  # (current_thread_name(), inline)
        thread_name = _active[_get_ident()].name
    except KeyError:
        thread_name = current_thread_name()
    runtime.recorder.append((
        runtime.receive_spans, min(started_ns, now), now, parent[0], span_id, parent[1],
        parent[2], flags, state, span_name, _CONSUMER, None,
        (constants, carrier, _core._get_native_id(), thread_name, now, started_ns,
         _core.span_pid, size, task),
        None, parent_flags, ambient,
    ))
    mine = _with_span(NonRecordingSpan(span_context(parent[0], span_id, False, flags, state)),
                      current)
    _core._set_current(mine)
    _core._attached.set((mine, current))


def receive_unlinked(prof: Profile, started_ns: int, now: int, size: int | None) -> None:
    """_core.receive_unlinked's record path (raw bytes: no carrier, no producer)."""
    ids = new_span(prof.span_name, _CONSUMER)
    if ids is None:
        return
    runtime.recorder.append((
        runtime.unlinked_spans, min(started_ns, now), now, ids[0], ids[1], ids[2], ids[3],
        ids[5], ids[6], prof.span_name, _CONSUMER, ids[7],
        (prof, _core._get_native_id(), current_thread_name(), now, started_ns, _core.span_pid,
         size),
        None, ids[4], None,
    ))


# --- on the drain thread -----------------------------------------------------------------------


class MessageSpans(SpanRecords):
    """Message records of one tracer; subclasses say what the attributes are."""

    def events(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        return ()

    def links(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        return ()

    def status(self, record: tuple[Any, ...]) -> Any:
        return _UNSET

    def start_attributes(self, record: tuple[Any, ...]) -> Any:
        return None  # (the SDK path gives start_span none: see _core.sampler_reads_attributes)

    def plain(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        return self._plain(record, (), _UNSET, True)  # (events and status known: no calls)


class SendSpans(MessageSpans):
    """Producer spans: ``_core.start_send``'s attributes."""

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        values = record[S_VALUES]
        prof, message_id, thread_id, thread_name, pid, size, content = values[:7]
        more = {**prof.start, MESSAGE_ID: message_id, THREAD_ID: thread_id,
                THREAD_NAME: thread_name}
        if prof.queue_type is not None:
            more[QUEUE_TYPE] = prof.queue_type
        if pid is not None:
            more[PID] = pid
        if size is not None:
            more[BODY_SIZE] = size
        if content is not None:
            more[CONTENT] = content_repr(content[0]) if type(content) is tuple else content
        if len(values) > 7:
            more.update(values[7])
        return more


class ReceiveSpans(MessageSpans):
    """Consumer spans of a carried message: ``_core.receive``'s attributes and links."""

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        return receive_attributes(*record[S_VALUES])

    # The producer's context is the record's parent (its trace, parent id, remote flag,
    # flags and state), kept as those values rather than as a SpanContext: a record waiting
    # in the buffer holds two objects fewer for the garbage collector to walk. S_LINKED
    # holds the consumer's own ambient context, or None.

    def links(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        producer = Link(span_context(record[R_TRACE_ID], record[R_PARENT_ID],
                                     bool(record[R_PARENT_REMOTE]), record[S_PARENT_FLAGS],
                                     record[R_STATE]))
        ambient = record[S_LINKED]
        if ambient is None:
            return (producer,)
        return (producer, Link(ambient, {"procscope.messaging.link": "consumer"}))

    def plain_links(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """``links`` as plain links, made from the record's values without Links."""
        ambient = record[S_LINKED]
        first = (record[R_TRACE_ID], record[R_PARENT_ID], int(record[S_PARENT_FLAGS]),
                 state_header(record[R_STATE]), None, bool(record[R_PARENT_REMOTE]))
        if ambient is None:
            return (first,)
        return (first, (ambient[0], ambient[1], int(ambient[3]), state_header(ambient[4]),
                        {"procscope.messaging.link": "consumer"}, ambient[2]))


class UnlinkedSpans(MessageSpans):
    """Consumer spans of raw bytes: ``_core.receive_unlinked``'s attributes."""

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        prof = record[S_VALUES][0]
        return unlinked_attributes(prof.start, *record[S_VALUES])


def install(tracer: Any, recorder: Any) -> None:
    """Make the messaging runtime record through ``recorder``."""
    runtime.spans = runtime.send_spans = SendSpans(tracer, recorder)
    runtime.receive_spans = ReceiveSpans(tracer, recorder)
    runtime.unlinked_spans = UnlinkedSpans(tracer, recorder)
    runtime.records = __import__(__name__, fromlist=["install"])
    _core.record_through(recorder, start_send)
