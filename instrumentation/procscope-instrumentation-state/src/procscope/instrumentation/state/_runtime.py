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

from procscope.core import head_sampling
from procscope.core.guard import log_internal_error, warn_once
from procscope.core.head_sampling import should_record, take_root_decision
from procscope.core.settings import BadSettingError, resolve_one

from ._events import add_event

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
        "spans",
        "tracer",
    )

    def __init__(self) -> None:
        self.active = False
        # Bumped at each instrument(): trackers from before resynchronise with a snapshot.
        self.generation = 0
        self.tracer: Any = None
        # What starts the spans made for changes outside any span: the tracer, or
        # procscope.core.recorded's SpanRecords when the provider has the recorder (the
        # span is then a record until it ends).
        self.spans: Any = None
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
    RT.spans = _spans_for(RT.tracer, kwargs.get("tracer_provider") or trace.get_tracer_provider())
    RT.log_events = False
    RT.logger = None
    if events == "log":
        RT.logger = _get_logger(version, kwargs.get("logger_provider"))
        RT.log_events = RT.logger is not None


def _spans_for(tracer: Any, provider: Any) -> Any:
    from procscope.core.recorded import SpanRecords, records_allowed
    from procscope.core.recorder import recorder_of

    recorder = recorder_of(provider)
    if recorder is None or not records_allowed(tracer):
        return tracer
    try:
        return SpanRecords(tracer, recorder)
    except Exception:  # noqa: BLE001 -- not an SDK tracer we know: its own spans
        log_internal_error()
        return tracer


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


class Target:
    """Where the events of one record go: a span (ours to end, or the current one) or logs."""

    __slots__ = ("owned", "span")

    def __init__(self, span: Any, owned: bool) -> None:
        self.span = span
        self.owned = owned

    def add(self, name: str, attributes: dict[str, Any]) -> None:
        """Add one event; ``attributes`` must hold only str, int, bool and tuples of them.

        On SDK spans the event is built and appended the way ``add_event`` does it,
        without re-validating values that are valid by construction (see _events).
        """
        span = self.span
        if span is None:
            _emit_log(name, attributes)
        else:
            add_event(span, name, attributes)

    def end(self) -> None:
        if self.owned:
            self.span.end()


_LOG_TARGET = Target(None, False)


_CONTEXT_VAR = getattr(head_sampling, "_context_var", None)
_SPAN_KEY = getattr(head_sampling, "_SPAN_KEY", None)

if _CONTEXT_VAR is not None and _SPAN_KEY is not None:
    # The current context, read the way the head gate does (four calls fewer than
    # trace.get_current_span(): this runs on every traced call).
    context_get: Callable[[], Any] = _CONTEXT_VAR.get
    SPAN_KEY: Any = _SPAN_KEY
else:  # another context implementation: the public API, same shape
    SPAN_KEY = "current-span"

    def context_get() -> Any:
        span = trace.get_current_span()
        return {SPAN_KEY: None if span is INVALID_SPAN else span}


def current_span() -> Any:
    """trace.get_current_span(), read as :data:`context_get` does."""
    span = context_get().get(SPAN_KEY)
    return span if span is not None else INVALID_SPAN


# What the current span means for a traced call, decided once per call when it starts
# (see context_kind):
RECORDING = 0  # sampled and recording: events go on it (no span of ours, no start time)
UNSAMPLED = 1  # in a trace head sampling dropped: record nothing, resynchronise later
OTHER = 2  # no span, or sampled but not recording (a remote parent): a span is made if
#            anything changes

# The last context asked about, its span and the span's kind, as one tuple replaced whole
# (so a reader never pairs one context with another's answer). Contexts are immutable and
# a span's sampled flag never changes, so one shared slot is right for every thread (a
# race only costs the next caller the full check); it keeps that one context alive,
# nothing else. A request's or a trace's calls keep finding the same context: the usual
# answer is one identity comparison.
LAST_CONTEXT: list[tuple[Any, Any, int]] = [(None, None, OTHER)]


def context_kind(context: Any) -> tuple[Any, Any, int]:
    """``(context, span or None, kind)`` for a context (see LAST_CONTEXT); remembered."""
    span = context.get(SPAN_KEY)
    if span is None:
        kind = OTHER
    else:
        span_context = span.get_span_context()
        if span_context.is_valid and not span_context.trace_flags.sampled:
            kind = UNSAMPLED
        elif span.is_recording():
            # Remembered as recording even if it ends later: that only means a span made
            # for a change after its end starts when the change is recorded (see begin()).
            kind = RECORDING
        else:
            kind = OTHER
    answer = (context, span, kind)
    LAST_CONTEXT[0] = answer
    return answer


def call_kind() -> tuple[Any, Any, int]:
    """context_kind() of the current context, remembered or not."""
    context = context_get()
    last = LAST_CONTEXT[0]
    return last if last[0] is context else context_kind(context)


def begin(describe: Callable[[], tuple[str, dict[str, Any]]], start_ns: int) -> Target | None:
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
    span = RT.spans.start_span(
        span_name,
        kind=SpanKind.INTERNAL,
        attributes=span_attributes,
        start_time=start_ns or time.time_ns(),  # 0: the call began in a span since ended
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
