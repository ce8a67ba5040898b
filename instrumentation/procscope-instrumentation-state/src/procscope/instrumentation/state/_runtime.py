"""The instrumentor's live switches, its settings, and where its events go.

Recording is on between ``StateInstrumentor().instrument()`` and ``uninstrument()``; the
patched classes stay patched (``trace_state`` is the user's decision, not the level's) but
their wrappers pass straight through while :data:`RT` says off.

Events go on the current span when it records. When there is none, a span is started only
once a change has actually happened (so a method that changes nothing makes no span), with
the method's start time, and only if the head-sampling gate says this trace is kept. In log
mode (``events="log"``) each event is a LogRecord with ``event_name`` instead, in the
current span's context: OpenTelemetry's successor to span events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind

from ._common import head_sampling
from ._common.guard import warn_once
from ._common.head_sampling import should_record, take_root_decision
from ._common.settings import BadSettingError, resolve_one

ENV_SNAPSHOT_EVERY = "PROCSCOPE_STATE_SNAPSHOT_EVERY"
ENV_EVENTS = "PROCSCOPE_STATE_EVENTS"
ENV_MAX_DEPTH = "PROCSCOPE_STATE_MAX_DEPTH"
ENV_MAX_ITEMS = "PROCSCOPE_STATE_MAX_ITEMS"

DEFAULT_SNAPSHOT_EVERY = 100
DEFAULT_EVENTS = "span"
DEFAULT_MAX_DEPTH = 3
DEFAULT_MAX_ITEMS = 1000
MAX_CHANGE_ENTRIES = 32  # detailed (path, old, new) entries per change event


def parse_positive_int(value: object) -> int:
    """A whole number of at least 1."""
    if isinstance(value, bool):
        raise BadSettingError("expected a whole number of at least 1")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise BadSettingError("expected a whole number of at least 1") from None
    if number < 1:
        raise BadSettingError("expected a whole number of at least 1")
    return number


def parse_events(value: object) -> str:
    text = str(value).strip().lower()
    if text in ("span", "spans", "span_events"):
        return "span"
    if text in ("log", "logs", "log_events"):
        return "log"
    raise BadSettingError("expected span or log")


class Runtime:
    """Process-wide switches read by every wrapper (plain attributes: see shared_state)."""

    __slots__ = (
        "active",
        "generation",
        "log_events",
        "logger",
        "max_depth",
        "max_items",
        "snapshot_every",
        "tracer",
    )

    def __init__(self) -> None:
        self.active = False
        # Bumped at each instrument(): trackers from before resynchronise with a snapshot.
        self.generation = 0
        self.tracer: Any = None
        self.logger: Any = None
        self.log_events = False
        self.snapshot_every = DEFAULT_SNAPSHOT_EVERY
        self.max_depth = DEFAULT_MAX_DEPTH
        self.max_items = DEFAULT_MAX_ITEMS


RT = Runtime()


def configure(kwargs: Mapping[str, Any], version: str) -> None:
    """Apply instrument() keywords (else PROCSCOPE_STATE_* variables, else defaults)."""
    env = os.environ
    RT.snapshot_every = resolve_one(
        "snapshot_every",
        ENV_SNAPSHOT_EVERY,
        kwargs.get("snapshot_every"),
        parse_positive_int,
        DEFAULT_SNAPSHOT_EVERY,
        env,
    )
    RT.max_depth = resolve_one(
        "max_depth",
        ENV_MAX_DEPTH,
        kwargs.get("max_depth"),
        parse_positive_int,
        DEFAULT_MAX_DEPTH,
        env,
    )
    RT.max_items = resolve_one(
        "max_items",
        ENV_MAX_ITEMS,
        kwargs.get("max_items"),
        parse_positive_int,
        DEFAULT_MAX_ITEMS,
        env,
    )
    events = resolve_one(
        "events", ENV_EVENTS, kwargs.get("events"), parse_events, DEFAULT_EVENTS, env
    )
    RT.tracer = trace.get_tracer(
        "procscope.instrumentation.state", version, kwargs.get("tracer_provider")
    )
    RT.log_events = False
    RT.logger = None
    if events == "log":
        RT.logger = _get_logger(version, kwargs.get("logger_provider"))
        RT.log_events = RT.logger is not None


def _get_logger(version: str, logger_provider: Any) -> Any:
    try:
        from opentelemetry._logs import get_logger

        return get_logger("procscope.instrumentation.state", version, logger_provider)
    except Exception:  # noqa: BLE001 -- an API too old for logs: fall back to span events
        warn_once(
            "state-log-events",
            "procscope: log-based state events need opentelemetry-api with logs; using span events",
        )
        return None


# ---------------------------------------------------------------------------- emitting


try:
    from opentelemetry.sdk.trace import Event as _PlainSdkEvent
except ImportError:  # the API alone: spans are never SDK spans then
    _PlainSdkEvent = None  # type: ignore[assignment,misc]


def _event_class() -> Any:
    """The SDK's Event, or a subclass that builds the same object in one step.

    Event.__init__ goes through EventBase.__init__ with super() and two unused
    parameters: a third of what adding an event costs. The subclass sets the same three
    attributes directly; it is used only if a real Event holds exactly those (checked
    here, once), so an SDK that changes Event gets the SDK's own constructor.
    """
    if _PlainSdkEvent is None:
        return None
    try:
        probe = _PlainSdkEvent("probe", {"k": 1}, 5)
        if vars(probe) != {"_name": "probe", "_timestamp": 5, "_attributes": {"k": 1}}:
            return _PlainSdkEvent
    except Exception:  # noqa: BLE001 -- any surprise: the SDK's constructor
        return _PlainSdkEvent

    class StateEvent(_PlainSdkEvent):  # type: ignore[valid-type,misc]
        __slots__ = ()

        def __init__(self, name: str, attributes: Any) -> None:
            self._name = name
            self._timestamp = time.time_ns()
            self._attributes = attributes

    return StateEvent


_SdkEvent: Any = _event_class()

# Span classes whose events we may append already built (see Target.add), by type.
_FAST_TYPES: dict[type, bool] = {}


def _fast_events(span_type: type) -> bool:
    fast = _FAST_TYPES.get(span_type)
    if fast is None:
        try:
            from opentelemetry.sdk.trace import Span as SdkSpan

            fast = issubclass(span_type, SdkSpan) and hasattr(span_type, "_add_event")
        except Exception:  # noqa: BLE001 -- no SDK: only the public API
            fast = False
        fast = fast and _SdkEvent is not None
        _FAST_TYPES[span_type] = fast
    return fast


def add_span_event(span: Any, name: str, attributes: dict[str, Any]) -> None:
    """Add one event to a span (see Target.add: already built on SDK spans)."""
    if _FAST_TYPES.get(type(span)) or _fast_events(type(span)):
        # The dict is never touched again by us: no read-only copy needed.
        span._add_event(_SdkEvent(name, attributes))
    else:
        span.add_event(name, attributes)


class Target:
    """Where the events of one record go: a span (ours to end, or the current one) or logs."""

    __slots__ = ("owned", "span")

    def __init__(self, span: Any, owned: bool) -> None:
        self.span = span
        self.owned = owned

    def add(self, name: str, attributes: dict[str, Any]) -> None:
        """Add one event; ``attributes`` must hold only str, int, bool and tuples of them.

        On SDK spans the event is appended already built: ``add_event`` would re-validate
        every value (about half a microsecond per attribute, more than all our own work
        for a one-field change), and ours are valid and bounded by construction. Any
        other span gets the public ``add_event``.
        """
        span = self.span
        if span is None:
            _emit_log(name, attributes)
        else:
            add_span_event(span, name, attributes)

    def end(self) -> None:
        if self.owned:
            self.span.end()


_LOG_TARGET = Target(None, False)


_CONTEXT_VAR = getattr(head_sampling, "_context_var", None)
_SPAN_KEY = getattr(head_sampling, "_SPAN_KEY", None)


def current_span() -> Any:
    """trace.get_current_span(), reading the context variable directly as the head gate
    does (four calls fewer: this runs at every recorded change)."""
    if _CONTEXT_VAR is not None and _SPAN_KEY is not None:
        span = _CONTEXT_VAR.get().get(_SPAN_KEY)
        return span if span is not None else INVALID_SPAN
    return trace.get_current_span()


def begin(
    describe: Callable[[], tuple[str, dict[str, Any]]], start_ns: int
) -> Target | None:
    """A target for events now, or None when this trace is not sampled (record nothing).

    ``describe()`` gives the name and attributes of the span to start when none is current.
    """
    if RT.log_events:
        if not should_record():
            return None
        take_root_decision()  # no span follows: the sampler must not inherit this draw
        return _LOG_TARGET
    current = current_span()
    if current.is_recording():
        return Target(current, False)
    if not should_record():
        return None
    span_name, span_attributes = describe()
    span = RT.tracer.start_span(
        span_name, kind=SpanKind.INTERNAL, attributes=span_attributes, start_time=start_ns
    )
    return Target(span, True)


def _emit_log(name: str, attributes: dict[str, Any]) -> None:
    logger = RT.logger
    if logger is None:
        return
    now = time.time_ns()
    try:
        logger.emit(
            timestamp=now,
            event_name=name,
            attributes=attributes,
            context=otel_context.get_current(),
        )
    except TypeError:
        # An API whose Logger.emit takes only a LogRecord (before event_name existed):
        # the event's name goes in the older "event.name" attribute.
        from opentelemetry._logs import LogRecord

        record: Any = LogRecord(timestamp=now, attributes={**attributes, "event.name": name})
        logger.emit(record)
