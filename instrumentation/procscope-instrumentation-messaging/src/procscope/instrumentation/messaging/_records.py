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

A message record is ``R_*`` of ``procscope.core.recorder`` followed by ``M_*``.
"""

from __future__ import annotations

import random
import time
import traceback
from typing import Any

from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from procscope.core.recorder import (
    R_DATA,
    R_END,
    R_FLAGS,
    R_PARENT_ID,
    R_PARENT_REMOTE,
    R_SPAN_ID,
    R_START,
    R_STATE,
    R_TRACE_ID,
    RecordKind,
)
from procscope.core.threadinfo import current_thread_name

from . import _core
from ._content import content_repr
from ._core import (
    BLOCK_TIME,
    BODY_SIZE,
    C_MESSAGE_ID,
    C_PID,
    C_SENT_NS,
    C_THREAD_ID,
    C_THREAD_NAME,
    CONTENT,
    CONTEXT_PROPAGATED,
    MESSAGE_ID,
    PID,
    QUEUE_TYPE,
    SENDER_PID,
    SENDER_THREAD_ID,
    SENDER_THREAD_NAME,
    THREAD_ID,
    THREAD_NAME,
    WAIT_TIME,
    Profile,
    body_size,
    runtime,
)

# After the common fields: the span's name, its kind, the sampler's attributes for a root
# (None for a child: the drain asks the sampler), the values its attributes are made of,
# an error's (type name, time, exception event attributes), the parent's trace flags, and
# the links' contexts (receives: the producer's, and the consumer's own trace if any).
M_NAME, M_SPAN_KIND, M_SAMPLER_ATTRS, M_VALUES = R_DATA, R_DATA + 1, R_DATA + 2, R_DATA + 3
M_ERROR, M_PARENT_FLAGS, M_LINKED = R_DATA + 4, R_DATA + 5, R_DATA + 6

_PRODUCER = SpanKind.PRODUCER
_CONSUMER = SpanKind.CONSUMER
_RANDOM_FLAG = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_getrandbits = random.getrandbits
_time_ns = time.time_ns
_new_tuple = tuple.__new__
# The content of these is the same whenever it is represented: done on the drain thread.
_IMMUTABLE = frozenset((int, float, complex, bool, str, bytes, type(None)))
# TraceFlags by value: a span has one of a handful.
_FLAGS: dict[int, TraceFlags] = {}


def trace_flags(value: int) -> TraceFlags:
    flags = _FLAGS.get(value)
    if flags is None:
        flags = _FLAGS[value] = TraceFlags(value)
    return flags


def span_context(trace_id: int, span_id: int, remote: bool, flags: int, state: Any) -> Any:
    """A SpanContext of ids that are valid by construction (drawn by the id generator or
    taken from a valid context), made without SpanContext's validation: the same tuple
    ``SpanContext(...)`` returns, a third of its cost."""
    return _new_tuple(SpanContext, (trace_id, span_id, remote, trace_flags(flags), state, True))


def exception_attributes(exc: BaseException) -> dict[str, Any]:
    """The attributes of the SDK's "exception" event, as ``Span.record_exception`` makes
    them, taken now (on the caller's thread: the record must not keep the exception, its
    traceback or the frames it holds alive until the drain)."""
    stacktrace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    module = type(exc).__module__
    qualname = type(exc).__qualname__
    exception_type = f"{module}.{qualname}" if module and module != "builtins" else qualname
    return {
        "exception.type": exception_type,
        "exception.message": str(exc),
        "exception.stacktrace": stacktrace,
        "exception.escaped": "False",
    }


# --- on the caller's thread --------------------------------------------------------------------


def new_span(name: str, kind: SpanKind) -> tuple[Any, ...] | None:
    """Ids, parent and sampling of a span about to be recorded, as start_span would make
    them: (trace id, span id, parent id or 0, parent remote, parent flags, flags, trace
    state, the sampler's attributes for a root); None when the sampler drops it."""
    spans = runtime.spans
    ctx = _core.current_context()
    parent: Any = ctx.get(_core.SPAN_KEY) if ctx else None
    if parent is not None:
        parent_context = parent.get_span_context()
        if parent_context[5]:  # valid: a child, sampled as its parent is
            if not parent_context[3] & 1:
                return None
            parent_flags = parent_context[3]
            return (
                parent_context[0], spans.new_span_id(), parent_context[1], parent_context[2],
                parent_flags, 1 | (parent_flags & _RANDOM_FLAG), parent_context[4], None,
            )
    trace_id, span_id = spans.new_ids()
    result = spans.sample_root(trace_id, name, kind)
    if result is None:
        return None
    return (trace_id, span_id, 0, False, 0, spans.root_flags, result.trace_state,
            result.attributes)


class PendingSend:
    """A producer span not yet ended: ended (once) by ``end()`` or ``_core.end_with``,
    which append its record."""

    __slots__ = ("ids", "name", "start", "values")

    def __init__(self, name: str, start: int, ids: tuple[Any, ...] | None,
                 values: tuple[Any, ...]) -> None:
        self.name = name
        self.start = start
        self.ids = ids
        self.values = values

    def end(self, error: tuple[Any, ...] | None = None) -> None:
        ids = self.ids
        if ids is None:
            return
        self.ids = None
        runtime.recorder.append((
            runtime.send_spans, self.start, _time_ns(), ids[0], ids[1], ids[2], ids[3], ids[5],
            ids[6], self.name, _PRODUCER, ids[7], self.values, error, ids[4], None,
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
    ids = new_span(prof.span_name, _PRODUCER)
    if ids is None:
        return None, None
    thread_id = _core._get_native_id()
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
        return pending, (
            ids[0], ids[1], flags, message_id, prof.destination, _core._pid, thread_id,
            thread_name, _time_ns(), ids[6],
        )
    return pending, (
        ids[0], ids[1], flags, message_id, prof.destination, _core._pid, thread_id,
        thread_name, _time_ns(),
    )


def receive(
    carrier: tuple[Any, ...], parent: Any, ambient: Any, current: Any, span_name: str,
    constants: dict[str, Any], now: int, started_ns: int, size: int | None,
) -> None:
    """_core.receive's record path: the consumer span as a record, its context attached.
    ``ambient``: the consumer's own trace's context, to link back to, or None."""
    span_id = runtime.spans.new_span_id()
    parent_flags = parent[3]
    flags = 1 | (parent_flags & _RANDOM_FLAG)  # a child of a sampled producer
    state = parent[4]
    runtime.recorder.append((
        runtime.receive_spans, min(started_ns, now), now, parent[0], span_id, parent[1],
        parent[2], flags, state, span_name, _CONSUMER, None,
        (constants, carrier, _core._get_native_id(), current_thread_name(), now, started_ns,
         _core.span_pid, size),
        None, parent_flags, (parent, ambient),
    ))
    mine = _core._with_span(NonRecordingSpan(span_context(parent[0], span_id, False, flags, state)),
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


class MessageSpans(RecordKind):
    """Makes message records into ``ReadableSpan`` objects of one tracer."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._readable = ReadableSpan
        self._event = Event
        self.resource = tracer.resource
        self.sampler = tracer.sampler
        scope = getattr(tracer, "_instrumentation_scope", None)
        self.scope = scope if isinstance(scope, InstrumentationScope) else None
        self.info = getattr(tracer, "instrumentation_info", None)
        self.limits = getattr(tracer, "_span_limits", None)
        self.id_generator: Any = tracer.id_generator
        flags = int(TraceFlags.SAMPLED)
        try:
            if self.id_generator.is_trace_id_random():
                flags |= _RANDOM_FLAG
        except AttributeError:  # an SDK without the random-trace-id flag
            pass
        self.root_flags = flags
        # The sampler's attributes for a child, by the parent's trace state's "ot" value:
        # for a parent-based sampler they depend on nothing else (a sampled parent).
        self._child_attributes: dict[Any, Any] = {}

    def new_ids(self) -> tuple[int, int]:
        """A new trace id and span id, from the tracer's id generator."""
        generator = self.id_generator
        return generator.generate_trace_id(), generator.generate_span_id()

    def new_span_id(self) -> int:
        return self.id_generator.generate_span_id()  # type: ignore[no-any-return]

    def sample_root(self, trace_id: int, name: str, kind: SpanKind) -> Any:
        """The sampler's result for a new root (consumes the gate's hand-over), or None
        when it drops the trace. Called on the caller's thread, as the SDK would."""
        result = self.sampler.should_sample(None, trace_id, name, kind, None, None)
        if not result.decision.is_sampled():
            return None
        return result

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        """The span's own attributes, in the order the SDK path gave them."""
        raise NotImplementedError

    def links(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        return ()

    def _sampler_attributes(self, record: tuple[Any, ...]) -> Any:
        state = record[R_STATE]
        key = state.get("ot") if state else None
        cached = self._child_attributes.get(key, self)
        if cached is not self:
            return cached
        from opentelemetry import trace

        parent = span_context(record[R_TRACE_ID], record[R_PARENT_ID],
                              bool(record[R_PARENT_REMOTE]), record[M_PARENT_FLAGS], state)
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        result = self.sampler.should_sample(
            context, record[R_TRACE_ID], record[M_NAME], record[M_SPAN_KIND], None, None
        )
        attributes = result.attributes or None
        if len(self._child_attributes) < 256:
            self._child_attributes[key] = attributes
        return attributes

    def materialise(self, record: tuple[Any, ...]) -> Any:
        from opentelemetry.attributes import BoundedAttributes

        limits = self.limits
        parent_id = record[R_PARENT_ID]
        sampler_attributes = (
            record[M_SAMPLER_ATTRS] if not parent_id else self._sampler_attributes(record)
        )
        max_attributes = getattr(limits, "max_span_attributes", None)
        max_length = getattr(limits, "max_span_attribute_length", None)
        attributes = BoundedAttributes(
            max_attributes, sampler_attributes, immutable=False, max_value_len=max_length
        )
        more = self.attributes(record)
        inner = attributes._dict
        if (max_length is None and type(inner) is dict
                and (max_attributes is None or len(inner) + len(more) <= max_attributes)):
            # Values made by the instrumentor are ints, floats, bools and strs, which
            # validation returns unchanged: as the SDK path's add_attributes did.
            inner.update(more)
        else:
            for key, value in more.items():
                attributes[key] = value
        events: tuple[Any, ...] = ()
        status = Status(StatusCode.UNSET)
        error = record[M_ERROR]
        if error is not None:
            type_name, event_time, event_attributes = error
            attributes["error.type"] = type_name
            events = (self._event(
                "exception",
                BoundedAttributes(
                    getattr(limits, "max_event_attributes", None), event_attributes,
                    max_value_len=getattr(limits, "max_attribute_length", None),
                    immutable=True,
                ),
                event_time,
            ),)
            status = Status(StatusCode.ERROR, type_name)
        attributes._immutable = True
        state = record[R_STATE]
        trace_id = record[R_TRACE_ID]
        parent = None
        if parent_id:
            parent = span_context(trace_id, parent_id, bool(record[R_PARENT_REMOTE]),
                                  record[M_PARENT_FLAGS], state)
        return self._readable(
            name=record[M_NAME],
            context=span_context(trace_id, record[R_SPAN_ID], False, record[R_FLAGS], state),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            events=events,
            links=self.links(record),
            kind=record[M_SPAN_KIND],
            instrumentation_info=self.info,
            status=status,
            start_time=record[R_START],
            end_time=record[R_END],
            instrumentation_scope=self.scope,
        )


class SendSpans(MessageSpans):
    """Producer spans: ``_core.start_send``'s attributes."""

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        prof, message_id, thread_id, thread_name, pid, size, content = record[M_VALUES]
        more = {**prof.start, MESSAGE_ID: message_id}
        more[THREAD_ID] = thread_id
        more[THREAD_NAME] = thread_name
        if prof.queue_type is not None:
            more[QUEUE_TYPE] = prof.queue_type
        if pid is not None:
            more[PID] = pid
        if size is not None:
            more[BODY_SIZE] = size
        if content is not None:
            more[CONTENT] = content_repr(content[0]) if type(content) is tuple else content
        return more


class ReceiveSpans(MessageSpans):
    """Consumer spans of a carried message: ``_core.receive``'s attributes and links."""

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        constants, carrier, thread_id, thread_name, now, started_ns, pid, size = record[M_VALUES]
        more = constants.copy()
        more.update({
            MESSAGE_ID: carrier[C_MESSAGE_ID],
            THREAD_ID: thread_id,
            THREAD_NAME: thread_name,
            SENDER_PID: carrier[C_PID],
            SENDER_THREAD_ID: carrier[C_THREAD_ID],
            SENDER_THREAD_NAME: carrier[C_THREAD_NAME],
            WAIT_TIME: max(0, now - carrier[C_SENT_NS]) / 1e9,
            BLOCK_TIME: max(0, now - started_ns) / 1e9,
        })
        if pid is not None:
            more[PID] = pid
        if size is not None:
            more[BODY_SIZE] = size
        return more

    def links(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        producer, ambient = record[M_LINKED]
        if ambient is None:
            return (Link(producer),)
        return (Link(producer), Link(ambient, {"procscope.messaging.link": "consumer"}))


class UnlinkedSpans(MessageSpans):
    """Consumer spans of raw bytes: ``_core.receive_unlinked``'s attributes."""

    def attributes(self, record: tuple[Any, ...]) -> dict[str, Any]:
        prof, thread_id, thread_name, now, started_ns, pid, size = record[M_VALUES]
        more = prof.start.copy()
        more.update({
            THREAD_ID: thread_id,
            THREAD_NAME: thread_name,
            BLOCK_TIME: max(0, now - started_ns) / 1e9,
            CONTEXT_PROPAGATED: False,
        })
        if prof.queue_type is not None:
            more[QUEUE_TYPE] = prof.queue_type
        if pid is not None:
            more[PID] = pid
        if size is not None:
            more[BODY_SIZE] = size
        return more


def install(tracer: Any, recorder: Any) -> None:
    """Make the messaging runtime record through ``recorder``."""
    runtime.spans = runtime.send_spans = SendSpans(tracer)
    runtime.receive_spans = ReceiveSpans(tracer)
    runtime.unlinked_spans = UnlinkedSpans(tracer)
    runtime.records = __import__(__name__, fromlist=["install"])
    runtime.recorder = recorder
