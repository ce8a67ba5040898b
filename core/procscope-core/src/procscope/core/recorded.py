"""Spans as records: the part every instrumentor shares.

:class:`SpanRecords` is the :class:`~procscope.core.recorder.RecordKind` of one tracer: it
draws ids and asks the sampler as the SDK's ``Tracer.start_span`` does, on the caller's
thread, and on the drain thread makes a record into the ``ReadableSpan`` the SDK would
have made (attributes in the same order, the sampler's attributes first, events, links,
status, times). Instrumentors with a hot path of their own (messaging) subclass it and
keep their values in a tuple until the drain; others start a :class:`RecordSpan`, which
takes the calls a span takes (attributes, events, status, end) and appends its record
when it ends.

A span record is ``R_*`` of the recorder followed by ``S_*`` below.

The plain span
--------------
:meth:`SpanRecords.plain` gives the span a record becomes as a tuple of values ``marshal``
can carry (ints, floats, strs, bytes, bools, None, and tuples, lists and dicts of them):
no SDK object, so a child process can ship it and the trace DB can store it without a
``ReadableSpan``. Its fields (``P_*``):

- ``P_NAME`` (str), ``P_KIND`` (the SpanKind's int value)
- ``P_TRACE_ID``, ``P_SPAN_ID``, ``P_PARENT_ID`` (ints; parent 0: a root),
  ``P_PARENT_REMOTE`` (bool), ``P_FLAGS`` (the span's trace flags, int)
- ``P_STATE``: the trace state as its W3C ``tracestate`` header, or None when empty
- ``P_START``, ``P_END``: times in ns since the epoch
- ``P_STATUS_CODE`` (the StatusCode's int value), ``P_STATUS_DESCRIPTION`` (str or None)
- ``P_ATTRIBUTES``: a dict, the sampler's attributes first, in the SDK span's order, the
  span limits (count, value length) applied
- ``P_EVENTS``: ``((name, attributes dict, time_ns), ...)``, event limits applied
- ``P_LINKS``: ``((trace_id, span_id, flags, state header or None, attributes or None,
  is_remote), ...)``
- ``P_PARENT_FLAGS``: the parent's trace flags (0 for a root)

:func:`readable_from_plain` makes the ``ReadableSpan`` of a plain span; ``materialise``
is exactly that of ``plain``, so the two cannot differ. Not carried: the counts of
attributes, events and links the limits dropped.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from ._exception_event import exception_attributes
from .recorder import (
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

# After the recorder's fields: the span's name, its kind, the sampler's attributes for a
# root (None for a child: the drain asks the sampler, whose answer for a sampled parent
# depends only on the parent's trace state), the kind's values, an error's (type name,
# time, exception event attributes) or None, the parent's trace flags, and what links
# need (kind-specific) or None.
S_NAME, S_SPAN_KIND, S_SAMPLER_ATTRS, S_VALUES = R_DATA, R_DATA + 1, R_DATA + 2, R_DATA + 3
S_ERROR, S_PARENT_FLAGS, S_LINKED = R_DATA + 4, R_DATA + 5, R_DATA + 6

# The plain span's fields (see the module's docstring).
P_NAME, P_KIND, P_TRACE_ID, P_SPAN_ID, P_PARENT_ID, P_PARENT_REMOTE = 0, 1, 2, 3, 4, 5
P_FLAGS, P_STATE, P_START, P_END, P_STATUS_CODE, P_STATUS_DESCRIPTION = 6, 7, 8, 9, 10, 11
P_ATTRIBUTES, P_EVENTS, P_LINKS, P_PARENT_FLAGS = 12, 13, 14, 15

RANDOM_FLAG = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_INTERNAL = SpanKind.INTERNAL
_time_ns = time.time_ns
_new_tuple = tuple.__new__
_getrandbits = random.getrandbits
_FLAGS: dict[int, TraceFlags] = {}
_SPAN_KEY: Any = getattr(getattr(trace, "propagation", None), "_SPAN_KEY", None)


def _random_span_id() -> int:
    """``RandomIdGenerator.generate_span_id()``, one call shallower."""
    return _getrandbits(64) or _random_span_id()


def trace_flags(value: int) -> TraceFlags:
    """The TraceFlags of ``value`` (one object per value: a span has one of a handful)."""
    flags = _FLAGS.get(value)
    if flags is None:
        flags = _FLAGS[value] = TraceFlags(value)
    return flags


def span_context(trace_id: int, span_id: int, remote: bool, flags: int, state: Any) -> Any:
    """A SpanContext of ids valid by construction (drawn by the id generator or taken from
    a valid context), made without SpanContext's validation: the same tuple
    ``SpanContext(...)`` returns, for a third of its cost."""
    if state is None:
        state = DEFAULT_TRACE_STATE  # (as SpanContext() makes it)
    flags_object = _FLAGS.get(flags)  # (trace_flags(), inline)
    if flags_object is None:
        flags_object = trace_flags(flags)
    return _new_tuple(SpanContext, (trace_id, span_id, remote, flags_object, state, True))


def records_allowed(tracer: Any) -> bool:
    """True when spans of ``tracer`` can be records: an SDK tracer (resource, id generator)
    whose sampler samples every child of a sampled parent (procscope's, or a parent-based
    one that keeps sampled parents' children), so that deciding a child needs no call to
    the sampler, as the record path does not make one."""
    if getattr(tracer, "id_generator", None) is None or getattr(tracer, "resource", None) is None:
        return False
    sampler = getattr(tracer, "sampler", None)
    cls: Any = type(sampler)
    if cls.__module__ == "procscope._sampler" and cls.__qualname__ == "AdjustableRateSampler":
        return True
    try:
        from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler
    except ImportError:  # pragma: no cover -- another SDK
        return False
    if not isinstance(sampler, ParentBased) or cls.should_sample is not ParentBased.should_sample:
        return False
    return all(
        type(getattr(sampler, name, None)) is StaticSampler
        and getattr(sampler, name)._decision.is_sampled()
        for name in ("_remote_parent_sampled", "_local_parent_sampled")
    )


# Every SpanRecords, for a fork child to give them its tracers' new resource.
_span_records: weakref.WeakSet[SpanRecords] = weakref.WeakSet()
_renew_hook: list[bool] = []
_renew_lock = threading.Lock()


def _remember(kind: SpanRecords) -> None:
    with _renew_lock:
        _span_records.add(kind)
        if not _renew_hook and hasattr(os, "register_at_fork"):
            # Registered after the tracer's provider registered its own (a tracer comes
            # from its provider): hooks in a child run in the order registered, so the
            # provider has renewed its resource when this hook reads it.
            os.register_at_fork(after_in_child=_renew_resources)
            _renew_hook.append(True)


def _renew_resources() -> None:
    """In a fork child: the SDK's provider gives its tracers a resource of the child's
    (a service.instance.id of its own); the child's spans are made with it."""
    global _renew_lock
    _renew_lock = threading.Lock()  # (a thread of the parent may have held it)
    try:
        for kind in list(_span_records):
            tracer = kind._tracer()
            resource = getattr(tracer, "resource", None)
            if resource is not None and resource is not kind.resource:
                kind.resource = resource
                kind._origin = (resource, kind.scope)
    except Exception:  # noqa: BLE001 -- a fork hook must not fail the fork
        from .guard import log_internal_error

        log_internal_error()


class SpanRecords(RecordKind):
    """Ids, sampling and materialisation for the spans of one SDK tracer."""

    def __init__(self, tracer: Any, recorder: Any) -> None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._readable = ReadableSpan
        self._event = Event
        self.recorder = recorder
        self.resource = tracer.resource
        self._tracer = weakref.ref(tracer)
        _remember(self)
        self.sampler = tracer.sampler
        scope = getattr(tracer, "_instrumentation_scope", None)
        self.scope = scope if isinstance(scope, InstrumentationScope) else None
        self.info = getattr(tracer, "instrumentation_info", None)
        self._origin = (self.resource, self.scope)
        self.limits = limits = getattr(tracer, "_span_limits", None)
        from opentelemetry.attributes import BoundedAttributes

        self._bounded = BoundedAttributes
        self.max_attributes = getattr(limits, "max_span_attributes", None)
        self.max_length = getattr(limits, "max_span_attribute_length", None)
        self.max_event_attributes = getattr(limits, "max_event_attributes", None)
        self.max_event_length = getattr(limits, "max_attribute_length", None)
        self.id_generator: Any = tracer.id_generator
        # The SDK's own generator is random.getrandbits until the id is not 0: drawn here
        # directly (the same numbers from the same random state, a call fewer per id). A
        # generator of the program's (a subclass too) is always asked.
        self.sdk_ids = type(self.id_generator) is RandomIdGenerator
        if self.sdk_ids:
            self.new_span_id = _random_span_id  # type: ignore[method-assign]
        flags = int(TraceFlags.SAMPLED)
        try:
            if self.id_generator.is_trace_id_random():
                flags |= RANDOM_FLAG
        except AttributeError:  # an SDK without the random-trace-id flag
            pass
        self.root_flags = flags
        self._child_attributes: dict[Any, Any] = {}

    # --- on the caller's thread --------------------------------------------------------------

    def new_span_id(self) -> int:
        return self.id_generator.generate_span_id()  # type: ignore[no-any-return]

    def new_span(
        self, name: str, kind: SpanKind, parent: Any, context: Any = None,
        attributes: Any = None, links: Any = None,
    ) -> tuple[Any, ...]:
        """Ids, parent and sampling of a span about to start, as ``start_span`` makes them:
        (trace id, span id, parent id or 0, parent remote, parent flags, flags, trace
        state, the sampler's attributes for a root). ``parent``: the parent span's
        SpanContext or None. Bit 0 of flags says whether it is sampled; an unsampled
        span is not recorded (the caller makes a NonRecordingSpan of these ids)."""
        if parent is not None and parent[5]:  # a valid parent: sampled as it is
            parent_flags = parent[3]
            flags = (parent_flags & 1) | (parent_flags & RANDOM_FLAG)
            return (parent[0], self.new_span_id(), parent[1], parent[2], parent_flags, flags,
                    parent[4], None)
        generator = self.id_generator
        if self.sdk_ids:  # (in the SDK's order: the trace id first)
            trace_id = _getrandbits(128) or generator.generate_trace_id()
            span_id = _getrandbits(64) or generator.generate_span_id()
        else:
            trace_id = generator.generate_trace_id()
            span_id = generator.generate_span_id()
        # Asked on the caller's thread, as the SDK does: the sampler takes the head gate's
        # draw from a thread-local hand-over.
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        flags = self.root_flags if result.decision.is_sampled() else self.root_flags & ~1
        return (trace_id, span_id, 0, False, 0, flags, result.trace_state, result.attributes)

    def start_span(
        self, name: str, context: Any = None, kind: SpanKind = _INTERNAL,
        attributes: Mapping[str, Any] | None = None, start_time: int | None = None,
        span_id: int | None = None,
    ) -> Any:
        """A span as ``Tracer.start_span`` would start it: a :class:`RecordSpan` when
        sampled, else a NonRecordingSpan of the same ids. ``span_id``: the id to give it
        instead of a new one (a process's span, whose id its parent can tell)."""
        parent_span = trace.get_current_span(context)
        parent = parent_span.get_span_context()
        ids = self.new_span(name, kind, parent, context, attributes)
        if span_id:
            ids = (ids[0], span_id, *ids[2:])
        if not ids[5] & 1:
            return NonRecordingSpan(span_context(ids[0], ids[1], False, ids[5], ids[6]))
        return RecordSpan(self, name, kind, ids, attributes,
                          start_time if start_time is not None else _time_ns())

    # --- on the drain thread -----------------------------------------------------------------

    def attributes(self, record: tuple[Any, ...]) -> Mapping[str, Any]:
        """The span's own attributes (after the sampler's), in the order given."""
        return record[S_VALUES][0]  # type: ignore[no-any-return]

    def events(self, record: tuple[Any, ...]) -> Sequence[Any]:
        return record[S_VALUES][1]  # type: ignore[no-any-return]

    def links(self, record: tuple[Any, ...]) -> Sequence[Any]:
        return record[S_VALUES][2]  # type: ignore[no-any-return]

    def plain_links(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """The span's links as ``P_LINKS`` holds them (kinds that keep contexts, not
        Links, make them directly)."""
        links = self.links(record)
        if not links:
            return ()
        return tuple(
            (c.trace_id, c.span_id, int(c.trace_flags), state_header(c.trace_state),
             dict(link.attributes) if link.attributes is not None else None, c.is_remote)
            for link in links for c in (link.context,)
        )

    def status(self, record: tuple[Any, ...]) -> Any:
        return record[S_VALUES][3]

    def start_attributes(self, record: tuple[Any, ...]) -> Any:
        """The attributes the span was started with (given to the sampler), or None."""
        return record[S_VALUES][4]

    def _sampler_attributes(self, record: tuple[Any, ...], start: Any = None) -> Any:
        """What the sampler gives a sampled child: the span's start attributes (``start``)
        with its own, in the order the SDK's span has them. Without start attributes
        that depends only on the parent's trace state: cached by it."""
        state = record[R_STATE]
        empty = state is None or state is DEFAULT_TRACE_STATE or not state
        key = None if empty else state.get("ot")
        if not start:
            cached = self._child_attributes.get(key, self)
            if cached is not self:
                return cached
        parent = span_context(record[R_TRACE_ID], record[R_PARENT_ID],
                              bool(record[R_PARENT_REMOTE]), record[S_PARENT_FLAGS], state)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        result = self.sampler.should_sample(
            context, record[R_TRACE_ID], record[S_NAME], record[S_SPAN_KIND], start or None,
            None,
        )
        attributes = result.attributes or None
        if not start and len(self._child_attributes) < 256:
            self._child_attributes[key] = attributes
        return attributes

    def plain(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """The span ``record`` becomes, as plain values (``P_*``)."""
        return self._plain(record, self.events(record), self.status(record), True)

    def _plain(self, record: tuple[Any, ...], events: Any, status: Any,
               checked: bool) -> tuple[Any, ...]:
        """``plain`` of ``record`` with its events as (name, attributes, time) and its
        Status. ``checked``: its attribute values are known valid (made by an
        instrumentor: ints, floats, bools, strs); else they are validated as the SDK's
        span validates them (a list becomes a tuple, an invalid value is dropped)."""
        parent_id = record[R_PARENT_ID]
        if not parent_id:
            sampler_attributes = record[S_SAMPLER_ATTRS]
        else:
            start = self.start_attributes(record)
            state = record[R_STATE]
            sampler_attributes = self
            if not start and (state is None or state is DEFAULT_TRACE_STATE):
                # (_sampler_attributes' cached answer, looked up inline: nearly every child)
                sampler_attributes = self._child_attributes.get(None, self)
            if sampler_attributes is self:
                sampler_attributes = self._sampler_attributes(record, start)
        more = self.attributes(record)
        if not checked:
            more = self._clean(more, None, self.max_length)
        error = record[S_ERROR]
        max_attributes = self.max_attributes
        attributes: Any
        if (self.max_length is None and type(more) is dict
                and (max_attributes is None
                     or len(sampler_attributes or ()) + len(more) + 1 <= max_attributes)):
            # Nothing the limits would cut or drop, and valid values, which validation
            # returns unchanged: a plain dict holds what a BoundedAttributes would.
            if sampler_attributes:
                attributes = dict(sampler_attributes)
                attributes.update(more)
            else:
                attributes = more
            if error is not None:
                attributes.pop("error.type", None)  # (a key set again moves to the end)
                attributes["error.type"] = error[0]
        else:
            bounded = self._bounded(max_attributes, sampler_attributes, immutable=False,
                                    max_value_len=self.max_length)
            for key, value in more.items():
                bounded[key] = value
            if error is not None:
                bounded["error.type"] = error[0]
            attributes = dict(bounded)
        if events:
            clean = self._clean
            most, longest = self.max_event_attributes, self.max_event_length
            events = tuple(
                (name, clean(values, most, longest) if values else {}, when)
                for name, values, when in events
            )
        if error is not None:
            type_name, event_time, event_attributes = error
            events = (*events, ("exception", self._clean(
                event_attributes, self.max_event_attributes, self.max_event_length,
            ), event_time))
            code, description = 2, type_name
        elif status is _UNSET:
            code, description = 0, None
        else:
            code, description = status.status_code._value_, status.description
        # (an enum member's ``_value_`` is its value without the ``.value`` descriptor call)
        return (
            record[S_NAME], record[S_SPAN_KIND]._value_, record[R_TRACE_ID],
            record[R_SPAN_ID], parent_id, bool(record[R_PARENT_REMOTE]), record[R_FLAGS],
            state_header(record[R_STATE]), record[R_START], record[R_END], code, description,
            attributes, events if type(events) is tuple else tuple(events),
            self.plain_links(record),
            int(record[S_PARENT_FLAGS]) if parent_id else 0,  # (a TraceFlags from a context)
        )

    def _clean(self, values: Mapping[str, Any], most: int | None,
               longest: int | None) -> dict[str, Any]:
        """``values`` as the SDK's ``BoundedAttributes(most, values, max_value_len=
        longest)`` holds them (invalid ones dropped, lists made tuples, strings cut, the
        oldest beyond ``most`` dropped), as a new dict: at once when there is nothing
        to change, as nearly always (BoundedAttributes takes about 4 us for ten)."""
        if longest is None and (most is None or len(values) <= most):
            plain = _PLAIN_VALUES
            for key, value in values.items():
                if type(key) is not str or not key:
                    break
                if type(value) not in plain and (
                    type(value) is not tuple or any(type(item) not in plain for item in value)
                ):
                    break
            else:
                return dict(values)
        return dict(self._bounded(most, values, max_value_len=longest))

    def materialise(self, record: tuple[Any, ...]) -> Any:
        return readable_from_plain(self.plain(record), self.resource, self.scope, self.info)

    def origin(self, record: tuple[Any, ...]) -> tuple[Any, Any]:
        return self._origin


def state_header(state: Any) -> str | None:
    """A TraceState as its W3C header, or None when there is none or it is empty."""
    if state is None or state is DEFAULT_TRACE_STATE:  # (most spans: no len() call)
        return None
    return state.to_header() if state else None


_STATES: dict[str, Any] = {}


def trace_state(header: str | None) -> Any:
    """The TraceState of a header :func:`state_header` made (parsed once per header)."""
    if not header:
        return DEFAULT_TRACE_STATE
    state = _STATES.get(header)
    if state is None:
        from opentelemetry.trace.span import TraceState

        state = TraceState.from_header([header])
        if len(_STATES) < 1024:
            _STATES[header] = state
    return state


_KINDS = {kind.value: kind for kind in SpanKind}
# Attribute values the SDK's validation keeps as they are.
_PLAIN_VALUES = frozenset((str, int, float, bool, bytes, type(None)))
_STATUSES: dict[tuple[int, str | None], Status] = {}
_sdk: Any = None


def readable_from_plain(plain: tuple[Any, ...], resource: Any, scope: Any,
                        info: Any = None) -> Any:
    """The ``ReadableSpan`` of a plain span (see the module's docstring), of ``resource``
    and instrumentation ``scope`` (``info``: the deprecated InstrumentationInfo)."""
    global _sdk
    if _sdk is None:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk.trace import Event, ReadableSpan

        _sdk = (ReadableSpan, Event, BoundedAttributes)
    readable, event, bounded = _sdk
    state = trace_state(plain[P_STATE])
    trace_id = plain[P_TRACE_ID]
    parent_id = plain[P_PARENT_ID]
    parent = None
    if parent_id:
        parent = span_context(trace_id, parent_id, plain[P_PARENT_REMOTE],
                              plain[P_PARENT_FLAGS], state)
    events = plain[P_EVENTS]
    if events:
        # Read-only, as the SDK's events' attributes are (the limits are applied already).
        events = tuple(event(name, bounded(None, values, immutable=True), when)
                       for name, values, when in events)
    links = plain[P_LINKS]
    if links:
        links = tuple(
            Link(span_context(link_trace, link_span, remote, flags, trace_state(header)),
                 values)
            for link_trace, link_span, flags, header, values, remote in links
        )
    key = (plain[P_STATUS_CODE], plain[P_STATUS_DESCRIPTION])
    status = _STATUSES.get(key)
    if status is None:
        status = Status(StatusCode(key[0]), key[1])
        if len(_STATUSES) < 256:
            _STATUSES[key] = status
    return readable(
        name=plain[P_NAME],
        context=span_context(trace_id, plain[P_SPAN_ID], False, plain[P_FLAGS], state),
        parent=parent,
        resource=resource,
        attributes=plain[P_ATTRIBUTES],
        events=events,
        links=links,
        kind=_KINDS[plain[P_KIND]],
        instrumentation_info=info,
        status=status,
        start_time=plain[P_START],
        end_time=plain[P_END],
        instrumentation_scope=scope,
    )


_UNSET = UNSET_STATUS = Status(StatusCode.UNSET)


class RecordSpan(trace.Span):
    """A sampled span that is a record until it ends: what ``Tracer.start_span`` returns,
    for the calls a span takes, without building an SDK span on the caller's thread.

    Its values are plain lists and dicts changed by single operations, atomic under the
    GIL; like the SDK's span, one that has ended ignores further changes. Events and the
    exception event are made into SDK ``Event`` objects on the drain thread.
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_events",
        "_ids",
        "_kind",
        "_links",
        "_maker",
        "_name",
        "_start",
        "_start_attributes",
        "_status",
    )

    def __init__(self, maker: SpanRecords, name: str, kind: SpanKind, ids: tuple[Any, ...],
                 attributes: Mapping[str, Any] | None, start: int) -> None:
        self._maker = maker
        self._name = name
        self._kind = kind
        self._ids = ids
        self._start = start
        self._attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self._start_attributes = attributes
        self._events: list[tuple[str, Any, int]] = []
        self._links: list[Any] = []
        self._status = _UNSET
        self._ended = False
        self._context = span_context(ids[0], ids[1], False, ids[5], ids[6])

    def get_span_context(self) -> Any:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._ended:
            mine = self._attributes
            for key, value in attributes.items():
                # As the SDK's BoundedAttributes: a key set again moves to the end.
                mine.pop(key, None)
                mine[key] = value

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes.pop(key, None)
            self._attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if not self._ended:
            # Copied now, as the SDK's event does: the caller may reuse its dict.
            self._events.append(
                (name, dict(attributes) if attributes else attributes, timestamp or _time_ns())
            )

    def add_link(self, context: Any, attributes: Any = None) -> None:
        if not self._ended and context is not None and context.is_valid:
            self._links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        if self._ended:
            return
        if isinstance(status, Status):
            if self._status.status_code is StatusCode.OK:
                return  # as the SDK: OK is final
            self._status = status
        else:
            self._status = Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        if self._ended:
            return
        values = exception_attributes(exception)
        values["exception.escaped"] = str(escaped)
        if attributes:
            values.update(attributes)
        self._events.append(("exception", values, timestamp or _time_ns()))

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        ids = self._ids
        maker = self._maker
        maker.recorder.append((
            _GENERIC, self._start, end_time if end_time is not None else _time_ns(),
            ids[0], ids[1], ids[2], ids[3], ids[5], ids[6], self._name, self._kind, ids[7],
            (maker, self._attributes, self._events, self._links, self._status,
             self._start_attributes),
            None, ids[4], None,
        ))


class _GenericSpans(SpanRecords):
    """Materialises :class:`RecordSpan` records with the maker that started them."""

    def __init__(self) -> None:  # (a stand-in: each record names its maker)
        pass

    def plain(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        maker, attributes, events, links, status, start = record[S_VALUES]
        values = (attributes, events, links, status, start)
        # The program may have set any value on its span: validated as the SDK would.
        return maker._plain(
            (*record[:S_VALUES], values, *record[S_VALUES + 1:]), events, status, False
        )

    def origin(self, record: tuple[Any, ...]) -> tuple[Any, Any]:
        return record[S_VALUES][0]._origin  # type: ignore[no-any-return]

    def materialise(self, record: tuple[Any, ...]) -> Any:
        maker = record[S_VALUES][0]
        return readable_from_plain(self.plain(record), maker.resource, maker.scope, maker.info)


_GENERIC = _GenericSpans()
