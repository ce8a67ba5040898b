"""Messages as records: what a send or a receive appends, and the span it becomes.

Used when the tracer's provider has procscope's recorder (``procscope.core.recorder``)
and its sampler is one that never reads start attributes: then a message costs its
caller one tuple, and the drain thread makes the very span the SDK path would have made
(same ids, parent, links, attributes in the same order, events, status and times).
Otherwise ``_core`` makes SDK spans on the caller's thread, as before.

A message record is ``R_*`` of ``procscope.core.recorder`` followed by ``M_*``.
"""

from __future__ import annotations

import random
import traceback
from typing import Any

from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

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

# After the common fields: the span's name, its kind, the sampler's attributes for a root
# (None for a child: the drain asks the sampler), the attributes made on the caller's
# thread, the links (or None), and an error's (type name, exception event attributes).
M_NAME, M_SPAN_KIND, M_SAMPLER_ATTRS, M_ATTRIBUTES = R_DATA, R_DATA + 1, R_DATA + 2, R_DATA + 3
M_LINKS, M_ERROR, M_PARENT_FLAGS = R_DATA + 4, R_DATA + 5, R_DATA + 6

_getrandbits = random.getrandbits
_INVALID_TRACE_ID = 0
_RANDOM_FLAG = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))


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


class MessageSpans(RecordKind):
    """Makes message records into ``ReadableSpan`` objects of one tracer."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._readable = ReadableSpan
        self._event = Event
        self.tracer = tracer
        self.resource = tracer.resource
        self.sampler = tracer.sampler
        self.scope = getattr(tracer, "_instrumentation_scope", None)
        if not isinstance(self.scope, InstrumentationScope):
            self.scope = None
        self.info = getattr(tracer, "instrumentation_info", None)
        self.limits = getattr(tracer, "_span_limits", None)
        self.id_generator: Any = tracer.id_generator
        # The sampler's attributes for a child, by the parent's trace state's "ot" value:
        # for a parent-based sampler they depend on nothing else (a sampled parent).
        self._child_attributes: dict[Any, Any] = {}

    # --- on the caller's thread ------------------------------------------------------------

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

    def root_flags(self) -> int:
        flags = int(TraceFlags.SAMPLED)
        try:
            if self.id_generator.is_trace_id_random():
                flags |= _RANDOM_FLAG
        except AttributeError:  # an SDK without the random-trace-id flag
            pass
        return flags

    # --- on the drain thread ---------------------------------------------------------------

    def _sampler_attributes(self, record: tuple[Any, ...]) -> Any:
        state = record[R_STATE]
        key = state.get("ot") if state else None
        cached = self._child_attributes.get(key, self)
        if cached is not self:
            return cached
        from opentelemetry import trace

        parent = SpanContext(
            record[R_TRACE_ID], record[R_PARENT_ID], bool(record[R_PARENT_REMOTE]),
            TraceFlags(record[M_PARENT_FLAGS]), state,
        )
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
        if max_length is None and type(attributes._dict) is dict:
            # Values made by the instrumentor are ints, floats, bools and strs, which
            # validation returns unchanged: as the SDK path's add_attributes did.
            inner = attributes._dict
            more = record[M_ATTRIBUTES]
            if max_attributes is None or len(inner) + len(more) <= max_attributes:
                inner.update(more)
            else:
                for key, value in more.items():
                    attributes[key] = value
        else:
            for key, value in record[M_ATTRIBUTES].items():
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
        context = SpanContext(
            record[R_TRACE_ID], record[R_SPAN_ID], False, TraceFlags(record[R_FLAGS]), state
        )
        parent = None
        if parent_id:
            parent = SpanContext(
                record[R_TRACE_ID], parent_id, bool(record[R_PARENT_REMOTE]),
                TraceFlags(record[M_PARENT_FLAGS]), state,
            )
        return self._readable(
            name=record[M_NAME],
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            events=events,
            links=record[M_LINKS] or (),
            kind=record[M_SPAN_KIND],
            instrumentation_info=self.info,
            status=status,
            start_time=record[R_START],
            end_time=record[R_END],
            instrumentation_scope=self.scope,
        )
