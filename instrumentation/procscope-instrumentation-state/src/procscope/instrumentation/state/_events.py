"""Adding an event to an SDK span in fewer steps, with exactly the SDK's result.

``Span.add_event`` builds a ``BoundedAttributes`` (validating every value: about half a
microsecond per attribute, more than all our own work for a one-field change), an
``Event`` (through ``EventBase.__init__`` and ``super()``), then goes through two
decorated methods and two locks to append it. Our attributes are valid and bounded by
construction (str, int and tuples of them), so :func:`add_event` builds the same objects
directly and appends them under the same two locks, in the same order.

It does so only where that is provably the same thing: :func:`_replicable` checks, once,
that the SDK's functions involved use exactly the names the steps below were written
from, and that a probe span given events both ways holds identical events (types,
attributes, drop counts); and per span, that its class does not override ``add_event``
or ``_add_event`` and its limits would neither truncate nor drop our attributes. In any
other case (another SDK version, a span subclass, attribute limits set, a span already
ended) the public ``span.add_event`` (or the SDK's own ``_add_event``) runs instead.
"""

from __future__ import annotations

import threading
import time
from typing import Any

# The most attributes one of our events carries (a change with every optional part).
MAX_ATTRIBUTES = 16

# What each SDK function we replicate uses (its code's names), as read from SDK 1.45:
# the same names mean the same steps; anything else means the SDK changed them.
_EXPECTED_NAMES = {
    "Span.add_event": {
        "BoundedAttributes", "_limits", "max_event_attributes", "max_attribute_length",
        "_add_event", "Event",
    },
    "Span._add_event": {"_lock", "_end_time", "logger", "warning", "__name__"},
    "Span._add_event inner": {"_events", "append"},
    "BoundedList.append": {"_lock", "_dq", "maxlen", "len", "dropped", "append"},
    "BoundedAttributes.__init__": {
        "ValueError", "_dict", "maxlen", "dropped", "max_value_len", "threading", "Lock",
        "_lock", "_immutable", "_set_items",
    },
    "Event.__init__": {"super", "__init__", "_attributes"},
    "EventBase.__init__": {"_name", "time_ns", "_timestamp"},
}  # fmt: skip

_new = object.__new__
_Lock = threading.Lock
_time_ns = time.time_ns

try:
    from opentelemetry.attributes import BoundedAttributes as _BoundedAttributes
    from opentelemetry.sdk.trace import Event as _Event
    from opentelemetry.sdk.trace import Span as _SdkSpan
except ImportError:  # the API alone: no SDK spans to add to
    _BoundedAttributes = _Event = _SdkSpan = None  # type: ignore[assignment,misc]


def _names(func: Any) -> set[str]:
    return set(func.__code__.co_names)


def _sdk_names() -> dict[str, set[str]]:
    from opentelemetry.sdk.trace import EventBase
    from opentelemetry.sdk.util import BoundedList

    decorated = _SdkSpan._add_event
    (inner,) = [cell.cell_contents for cell in decorated.__closure__ or ()]
    return {
        "Span.add_event": _names(_SdkSpan.add_event),
        "Span._add_event": _names(decorated),
        "Span._add_event inner": _names(inner),
        "BoundedList.append": _names(BoundedList.append),
        "BoundedAttributes.__init__": _names(_BoundedAttributes.__init__),
        "Event.__init__": _names(_Event.__init__),
        "EventBase.__init__": _names(EventBase.__init__),
    }


def _probe_tracer(limits: Any) -> Any:
    """A tracer of a private provider (no processor, no exit hook, never global)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    provider = TracerProvider(
        sampler=ALWAYS_ON, resource=Resource({}), shutdown_on_exit=False, span_limits=limits
    )
    return provider.get_tracer("procscope.instrumentation.state.probe")


def _event_state(event: Any) -> tuple[Any, ...]:
    attributes = event._attributes
    own = {k: v for k, v in vars(attributes).items() if k != "_lock"}
    values = own.pop("_dict")
    return (
        type(event),
        sorted(k for k in vars(event) if k != "_timestamp"),
        event._name,
        type(attributes),
        type(attributes._lock),
        own,
        [(k, type(v), v) for k, v in values.items()],
        event.dropped_attributes,
    )


def _replicable() -> bool:
    """True when :func:`add_event` does exactly what ``Span.add_event`` does (see above)."""
    if _SdkSpan is None:
        return False
    try:
        if _sdk_names() != _EXPECTED_NAMES:
            return False
        from opentelemetry.sdk.trace import SpanLimits

        limits = SpanLimits(max_events=2)
        tracer = _probe_tracer(limits)
        public, ours = tracer.start_span("probe"), tracer.start_span("probe")
        for n in range(3):  # one more than fits: the oldest is dropped and counted
            attributes = {"s": f"v{n}", "i": n, "b": True, "t": ("a", "b"), "n": (1, 2), "e": ()}
            public.add_event("probe", dict(attributes))
            _append(ours, "probe", attributes, limits.max_event_attributes)
        return bool(
            [_event_state(e) for e in public.events] == [_event_state(e) for e in ours.events]
            and public.dropped_events == ours.dropped_events == 1
        )
    except Exception:  # noqa: BLE001 -- any surprise: the public add_event
        return False


def _append(span: Any, name: str, attributes: dict[str, Any], maxlen: Any) -> bool:
    """What ``span.add_event(name, attributes)`` does, for attributes already valid;
    False (nothing added) when the span has ended."""
    bounded = _new(_BoundedAttributes)
    bounded._dict = attributes
    bounded.maxlen = maxlen
    bounded.dropped = 0
    bounded.max_value_len = None
    bounded._lock = _Lock()
    bounded._immutable = True
    event = _new(_Event)
    event._name = name
    event._timestamp = _time_ns()
    event._attributes = bounded
    # Span._add_event (the decorator's lock and ended check) and BoundedList.append.
    with span._lock:
        if span._end_time is None:
            events = span._events
            with events._lock:
                queue = events._dq
                if queue.maxlen is not None and len(queue) == queue.maxlen:
                    events.dropped += 1
                queue.append(event)
            return True
    return False


_replicable_once: list[bool] = []  # [answer], once asked


# Span classes that take :func:`_append`, by class (True/False once seen).
_FAST_TYPES: dict[type, bool] = {}
# The last span limits found to leave our attributes as they are (one slot, replaced whole).
_limits_ok: list[Any] = [None]


def _fast_type(span_type: type) -> bool:
    fast = _FAST_TYPES.get(span_type)
    if fast is None:
        if not _replicable_once:
            _replicable_once.append(_replicable())  # a race asks twice: same answer
        fast = bool(
            _replicable_once[0]
            and _SdkSpan is not None
            and issubclass(span_type, _SdkSpan)
            and span_type.add_event is _SdkSpan.add_event
            and span_type._add_event is _SdkSpan._add_event
        )
        _FAST_TYPES[span_type] = fast
    return fast


def _limits_keep(limits: Any) -> bool:
    """True when BoundedAttributes under ``limits`` would keep our attributes unchanged."""
    if limits is _limits_ok[0]:
        return True
    try:
        maxlen = limits.max_event_attributes
        keep = limits.max_attribute_length is None and (maxlen is None or maxlen >= MAX_ATTRIBUTES)
    except AttributeError:
        return False
    if keep:
        _limits_ok[0] = limits
    return keep


def add_event(span: Any, name: str, attributes: dict[str, Any]) -> bool:
    """``span.add_event(name, attributes)``; ``attributes`` hold only str, int, bool and
    tuples of them, at most MAX_ATTRIBUTES, and are not used by the caller afterwards.
    True; False only for an SDK span that has ended (the SDK's warning is logged)."""
    fast = _FAST_TYPES.get(type(span))
    if fast is None:
        fast = _fast_type(type(span))
    if fast:
        limits = span._limits
        if (limits is _limits_ok[0] or _limits_keep(limits)) and _append(
            span, name, attributes, limits.max_event_attributes
        ):
            return True
        if span._end_time is not None:
            span.add_event(name, attributes)  # ended: the SDK's own warning, nothing added
            return False
    span.add_event(name, attributes)
    return True


# _scalars.record_frame has the steps of _append inlined: change both together.
__all__ = ["MAX_ATTRIBUTES", "add_event"]
