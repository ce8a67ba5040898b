"""What every part of the messaging instrumentor shares: the gate, the carrier, the spans.

A *carrier* is a plain tuple that travels with a sampled message (beside it for in-process
queues, pickled with it for multiprocessing). It holds the producer span's context and
what the consumer needs to describe the message: its id, its destination, who sent it and
when. A plain tuple of ints and strings pickles anywhere and costs little.

Unsampled messages get no carrier, no span and no wrapping: see :func:`record`.
"""

from __future__ import annotations

import contextvars
import os
import random
import threading
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from procscope.core import flight as _flight
from procscope.core import head_sampling, shared_state

try:  # (this package needs only the API; the SDK's samplers are recognised when present)
    from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler, TraceIdRatioBased
except ImportError:  # pragma: no cover -- another SDK
    ParentBased = StaticSampler = TraceIdRatioBased = None  # type: ignore[assignment,misc]
from procscope.core.guard import log_internal_error
from procscope.core.recorded import span_context as _span_context
from procscope.core.threadinfo import current_thread_name

from ._content import content_repr
from ._naming import NAME_ATTR, PROFILE_ATTR, name_of, own, set_own

# --- attribute names (docs/semantic-conventions.md, "Messaging instrumentor") --------------
SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
BODY_SIZE = "messaging.message.body.size"
ERROR_TYPE = "error.type"
THREAD_ID = "thread.id"
THREAD_NAME = "thread.name"
PID = "process.pid"
QUEUE_TYPE = "procscope.messaging.queue.type"
CONTENT = "procscope.messaging.content"
SENDER_PID = "procscope.messaging.sender.pid"
SENDER_THREAD_ID = "procscope.messaging.sender.thread.id"
SENDER_THREAD_NAME = "procscope.messaging.sender.thread.name"
# The asyncio task that sent or received (the lifecycle's task spans use the same key).
TASK_NAME = "procscope.task.name"
RECEIVER_PID = "procscope.messaging.receiver.pid"
WAIT_TIME = "procscope.messaging.wait_time"
BLOCK_TIME = "procscope.messaging.block_time"
CONTEXT_PROPAGATED = "procscope.messaging.context_propagated"

# messaging.system values, one per family (custom values: OTel has none for these).
SYSTEM_QUEUE = "python_queue"
SYSTEM_ASYNCIO = "python_asyncio_queue"
SYSTEM_MP_QUEUE = "python_multiprocessing_queue"
SYSTEM_MP_PIPE = "python_multiprocessing_pipe"
SYSTEM_MANAGER = "python_multiprocessing_manager"

CONTENT_LIMIT = 256

# Carrier layout (a tuple; see the module docstring).
C_TRACE_ID, C_SPAN_ID, C_FLAGS, C_MESSAGE_ID, C_DESTINATION = 0, 1, 2, 3, 4
C_PID, C_THREAD_ID, C_THREAD_NAME, C_SENT_NS = 5, 6, 7, 8
C_CONTEXT = 9  # only in a carrier that stays in its process: the producer's trace state
_PRODUCER = SpanKind.PRODUCER
_CONSUMER = SpanKind.CONSUMER

_live = shared_state.settings()
_state_dict: dict[str, Any] = shared_state.get().__dict__
_time_ns = time.time_ns
_getrandbits = random.getrandbits


class _Runtime:
    """The instrumentor's state while it is on; plain attributes read on each call."""

    def __init__(self) -> None:
        self.tracer: Any = None
        self.provider: Any = None  # the tracer's provider (the SDK's tracer does not say)
        # The provider's recorder and the kind that makes message records into spans,
        # when messages are records (see _records); None: SDK spans on the caller's thread.
        self.recorder: Any = None
        self.records: Any = None  # the _records module, once messages are records
        # What starts a sampled send: _records.start_send with a recorder, else
        # start_send below (the SDK span). Set with the recorder, by record_through().
        self.start_send: Any = None
        self.spans: Any = None
        self.send_spans: Any = None
        self.receive_spans: Any = None
        self.unlinked_spans: Any = None


runtime = _Runtime()


# --- the gate ---------------------------------------------------------------------------------

# The SDK's context variable, read directly: four Python calls saved per gate, most of
# the budget of an unsampled put+get.
_context_var = head_sampling.sdk_context_var()
_SPAN_KEY: Any = getattr(getattr(trace, "propagation", None), "_SPAN_KEY", None)
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY


def _record_slow() -> bool:
    if otel_context.get_value(_SUPPRESS_KEY):
        return False
    return head_sampling.should_record()


live = _live


state_dict = _state_dict
# Set on the shared state when the head records every trace (the tail processor decides).
TAIL_KEY = "head_records_every_trace"


_UNKNOWN: dict[str, Any] = {"procscope-unknown-context": True}


def _unknown_context() -> Any:
    return _UNKNOWN  # "maybe a parent" (and no cached span in it): callers ask record()


context_get: Any = _unknown_context  # replaced below by the SDK's ContextVar.get when found

# (span, its sampled flag) of the last current span the gate looked at; the hottest
# callers compare with it inline. Starts with a placeholder that no context holds.
last_span: tuple[Any, bool] = (object(), False)
# The same for the last context whose span answered: the current context is one object
# for as long as the code stays inside one span, so the hottest caller (queue.Queue.put)
# compares it by identity and skips even the span look-up. An OTel Context is immutable,
# so one context object always holds the same span and the same answer.
last_context: tuple[Any, bool] = (object(), False)
SPAN_KEY = _SPAN_KEY

if _context_var is not None and _SPAN_KEY is not None:
    _context_get = context_get = _context_var.get

    def record() -> bool:
        """The shared head-sampling gate, with its cheapest answers given here first.

        The messaging hot path runs on every put and every get, so the commonest "no"
        answers (instrumentation suppressed, or a current span that is not sampled, or a
        sample rate of 0) return without a call into the shared gate. Everything else,
        including every draw for a new root, goes to ``head_sampling.should_record()``,
        which hands its draw to the sampler.
        """
        global last_span, last_context
        ctx = _context_get()
        if ctx:
            if ctx.get(_SUPPRESS_KEY):
                return False
            span = ctx.get(_SPAN_KEY)
            if span is not None:
                last = last_span
                if last[0] is span:
                    last_context = (ctx, last[1])
                    return last[1]  # type: ignore[no-any-return]
                span_context = span.get_span_context()
                if span_context[5]:  # is_valid: the parent decides, as ParentBased does
                    sampled = bool(span_context[3] & 1)
                    # A span's sampled flag never changes: remember the last answer (one
                    # tuple, rebound at once, so a reader never pairs a span with
                    # another span's answer).
                    last_span = (span, sampled)
                    last_context = (ctx, sampled)
                    return sampled
        if not _live.sample_rate > 0.0 and not _state_dict.get(TAIL_KEY):
            return False
        return head_sampling.should_record()

else:  # another runtime context implementation: the public (slower) path
    record = _record_slow

# The gate for a caller that found the current context empty (see head_sampling).
record_root = head_sampling.should_record_root


# --- per-queue constants ------------------------------------------------------------------------

# The pid recorded on every span as ``process.pid``, or None while the tracer's resource
# already says it: a span's process is then its resource's (and the trace DB's per-span
# pid column). A forked child keeps its parent's resource, whose pid is then wrong for it:
# there the spans carry their own pid again. Kept up to date by instrument() and at fork.
span_pid: int | None = None
_pid = os.getpid()  # this process's (os.getpid() is a system call each time)


def update_span_pid() -> None:
    global span_pid, _pid
    pid = _pid = os.getpid()
    resource = getattr(runtime.tracer, "resource", None)
    attributes = getattr(resource, "attributes", None) or {}
    try:
        span_pid = None if attributes.get(PID) == pid else pid
    except Exception:  # noqa: BLE001 -- an odd resource: record the pid, as before
        span_pid = pid


def _span_pid_after_fork() -> None:
    # A fork child's resource still names its parent's pid (the SDK renews only its
    # process-dependent attributes, and procscope's provider makes those at their first
    # use: reading the resource here would make them at every fork). So the child's
    # spans carry their own pid.
    global span_pid, _pid
    span_pid = _pid = os.getpid()


# Whether the tracer's sampler might read a span's start attributes. OpenTelemetry's
# messaging conventions ask for the sampling-relevant attributes (system, operation,
# destination) at span creation, for samplers that decide by them. The SDK's own samplers
# and procscope's never read them; validating them at start_span costs about 3 us per
# message more than adding them to the new span (add_attributes), so with those samplers
# they are added there, like the rest. Set by instrument().
sampler_reads_attributes = True


def _blind(sampler: Any, depth: int = 0) -> bool:
    """True for a sampler known never to read the attributes it is given."""
    cls = type(sampler)
    if cls.__module__ == "procscope._sampler" and cls.__qualname__ == "AdjustableRateSampler":
        return True  # (procscope's own: passes them through, decides by context and rate)
    if StaticSampler is None:
        return False
    if cls in (StaticSampler, TraceIdRatioBased) or (
        isinstance(sampler, (StaticSampler, TraceIdRatioBased))
        and cls.should_sample in (StaticSampler.should_sample, TraceIdRatioBased.should_sample)
    ):
        return True
    if isinstance(sampler, ParentBased) and cls.should_sample is ParentBased.should_sample:
        delegates = [getattr(sampler, name, None) for name in (
            "_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
            "_local_parent_sampled", "_local_parent_not_sampled")]
        return depth < 4 and all(d is not None and _blind(d, depth + 1) for d in delegates)
    return False


def _choose_recorder() -> None:
    """Messages become records when the tracer's provider has procscope's recorder as its
    only span processor, and its sampler never reads start attributes and follows sampled
    parents: then the record path makes the same spans the SDK path would."""
    record_through(None)
    tracer = runtime.tracer
    from procscope.core.recorded import records_allowed

    if sampler_reads_attributes or not records_allowed(tracer):
        return
    provider = runtime.provider
    if provider is None:
        return
    from procscope.core.recorder import recorder_of

    recorder = recorder_of(provider)
    if recorder is None:
        return
    from . import _records

    _records.install(tracer, recorder)


def configure_for_tracer() -> None:
    """Read what the hot path needs to know of the tracer (at instrument and at fork)."""
    global sampler_reads_attributes
    update_span_pid()
    try:
        sampler_reads_attributes = not _blind(getattr(runtime.tracer, "sampler", None))
    except Exception:  # noqa: BLE001 -- unknown: give them at start, as the conventions ask
        sampler_reads_attributes = True
    try:
        _choose_recorder()
    except Exception:  # noqa: BLE001 -- SDK spans on the caller's thread, as before
        record_through(None)
        log_internal_error()


def record_through(recorder: Any, start: Any = None) -> None:
    """Messages become records through ``recorder``, sampled sends started by ``start``
    (``_records.start_send``); with None, SDK spans started by :func:`start_send`."""
    runtime.recorder = recorder
    runtime.start_send = start if recorder is not None else start_send


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_span_pid_after_fork)


class Profile:
    """What every sampled message of one queue or pipe shares for one operation.

    Made at the first sampled message and kept on the queue (an attribute set with
    ``object.__setattr__``, class default None; see ``_naming.CLASS_DEFAULTS``), so that
    a sampled message neither looks up the queue's name nor builds its constant
    attributes again. ``given`` is the name given with ``procscope.name()`` when it was
    made: naming the queue later makes a new profile.
    """

    __slots__ = ("destination", "given", "lock", "operation", "queue_type", "span_name", "start")

    def __init__(self, given: Any, operation: str, destination: str,
                 start: dict[str, Any], queue_type: str | None) -> None:
        self.given = given
        self.operation = operation
        self.destination = destination
        self.span_name = f"{operation} {destination}"
        self.start = start  # the span's start attributes (read-only once made)
        self.queue_type = queue_type
        self.lock: Any = None  # the lock of an in-process queue's side map (_side.lock_of)


def named_profile(given: Any, destination: str, type_name: str, system: str,
                  operation: str, operation_type: str, queue_type: bool) -> Profile:
    """The Profile of a queue or pipe end named ``destination``, of type ``type_name``."""
    return Profile(given, operation, destination, {
        SYSTEM: system,
        OPERATION_TYPE: operation_type,
        OPERATION_NAME: operation,
        DESTINATION: destination,
    }, type_name if queue_type else None)


def profile(target: Any, system: str, operation: str, operation_type: str,
            queue_type: bool = True) -> Profile:
    """The constants of ``target``'s sampled ``operation`` (cached on ``target``)."""
    try:  # (own() inlined: twice per put and per get)
        profiles = _own_attr(target, PROFILE_ATTR)
        given = _own_attr(target, NAME_ATTR)
    except AttributeError:
        profiles = None
        given = own(target, NAME_ATTR)
    if profiles is not None:
        found = profiles.get(operation)
        if found is not None and found.given is given:
            return found  # type: ignore[no-any-return]
    made = named_profile(given, name_of(target), type(target).__name__, system, operation,
                         operation_type, queue_type)
    try:
        if profiles is None:
            profiles = {}
            set_own(target, PROFILE_ATTR, profiles)
        profiles[operation] = made
    except (AttributeError, TypeError):
        pass  # an object that takes no attributes: made again next time
    return made


# --- carriers and spans -------------------------------------------------------------------------

_get_native_id = threading.get_native_id
_own_attr = object.__getattribute__  # (as _naming.own, without its call)
_get_span = trace.get_current_span
_Span = trace.Span
_INVALID_SPAN_CONTEXT = trace.INVALID_SPAN_CONTEXT
_Context = otel_context.Context


if _SPAN_KEY is not None:

    def _with_span(span: Any, context: Any) -> Any:
        """``trace.set_span_in_context(span, context)`` for a context in hand: the same
        new Context (``set_value`` copies the context and sets the key), two calls
        shallower."""
        return _Context({**context, _SPAN_KEY: span})

    def _span_context_in(context: Any) -> Any:
        """``trace.get_current_span(context).get_span_context()``, the look-up inline."""
        span = context.get(_SPAN_KEY)
        if span is None or not isinstance(span, _Span):
            return _INVALID_SPAN_CONTEXT
        return span.get_span_context()

else:  # pragma: no cover -- an API that keeps the span elsewhere: its public calls
    _with_span = trace.set_span_in_context

    def _span_context_in(context: Any) -> Any:
        return _get_span(context).get_span_context()


def thread_identity() -> tuple[int, str]:
    return _get_native_id(), current_thread_name()


def add_attributes(span: Any, more: dict[str, Any]) -> None:
    """Give a span just started (by us, on this thread) more attributes.

    Only the sampling-relevant attributes (OTel's messaging conventions: system,
    operation, destination) are given to ``start_span``, where the SDK validates each
    value (about 0.4 us apiece, for twenty-odd attributes per message the largest cost
    of a sampled message after the spans themselves). The rest are made here from
    ints, floats, bools and strs only, values that validation returns unchanged, so they
    go straight into the SDK span's attribute dict, under its lock. When the span is not
    the SDK's own, or limits apply (a maximum count or value length), the public
    ``set_attributes`` does the work instead, limits included.
    """
    attributes = getattr(span, "_attributes", None)
    if type(attributes) is BoundedAttributes and attributes.max_value_len is None:
        inner = attributes._dict
        maxlen = attributes.maxlen
        if type(inner) is dict and (maxlen is None or len(inner) + len(more) <= maxlen):
            with attributes._lock:
                if not attributes._immutable:
                    inner.update(more)
                    return
    span.set_attributes(more)


def start_send(
    prof: Profile, item: object, size: int | None = None, local: bool = False,
) -> tuple[Any, tuple[Any, ...] | None]:
    """Start a producer span; return it with the carrier for the message (None if unsampled).

    ``prof``: the queue's ``profile(target, system, operation, "send")``. ``local``: the
    carrier stays in this process (an in-process queue's side map), so it also holds the
    producer's trace state. The SDK path: with a recorder, ``runtime.start_send`` is the
    record path's (see record_through), which the senders call.
    """
    start = prof.start if sampler_reads_attributes else None
    span = runtime.tracer.start_span(prof.span_name, kind=_PRODUCER, attributes=start)
    span_context = span.get_span_context()
    # (SpanContext is a tuple: trace_id, span_id, is_remote, trace_flags, state, is_valid)
    if not (span_context[5] and span_context[3] & 1):  # valid and sampled
        return span, None
    thread_id = _get_native_id()
    thread_name = current_thread_name()
    message_id = f"{_getrandbits(64):016x}"
    more: dict[str, Any] = (
        {MESSAGE_ID: message_id} if start is not None else {**prof.start, MESSAGE_ID: message_id}
    )
    more[THREAD_ID] = thread_id
    more[THREAD_NAME] = thread_name
    if prof.queue_type is not None:
        more[QUEUE_TYPE] = prof.queue_type
    if span_pid is not None:
        more[PID] = span_pid
    if size is None:
        size = body_size(item)
    if size is not None:
        more[BODY_SIZE] = size
    if _live.capture_content:
        more[CONTENT] = content_repr(item)
    add_attributes(span, more)
    if local:
        return span, (
            span_context[0], span_context[1], span_context[3] & 0xFF, message_id,
            prof.destination, _pid, thread_id, thread_name, _time_ns(), span_context[4],
        )
    return span, (
        span_context[0], span_context[1], span_context[3] & 0xFF, message_id,
        prof.destination, _pid, thread_id, thread_name, _time_ns(),
    )


runtime.start_send = start_send


def body_size(item: object) -> int | None:
    """The body size where it costs nothing to know: bytes-like and text messages."""
    cls = type(item)
    if cls is bytes or cls is bytearray or cls is str:
        return len(item)  # type: ignore[arg-type]
    if cls is memoryview:
        return item.nbytes  # type: ignore[attr-defined]
    return None


def end_with(span: Any, exc: BaseException | None) -> None:
    """End a span; an exception out of the operation becomes its error (and goes on)."""
    try:
        if runtime.records is not None and type(span) is runtime.records.PendingSend:
            span.end_with(exc)
            return
        if exc is not None:
            span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        span.end()
    except Exception:  # noqa: BLE001 -- never let ours hide or replace the user's outcome
        log_internal_error()


def producer_context(carrier: tuple[Any, ...]) -> SpanContext:
    if len(carrier) > C_CONTEXT:  # (an in-process carrier)
        # Its ids are a sampled span's of this process, valid by construction: made
        # without SpanContext's validation (the same tuple).
        return _span_context(
            carrier[C_TRACE_ID], carrier[C_SPAN_ID], False, carrier[C_FLAGS],
            carrier[C_CONTEXT],
        )
    trace_id, span_id, flags = carrier[C_TRACE_ID], carrier[C_SPAN_ID], carrier[C_FLAGS]
    if type(trace_id) is int and type(span_id) is int and type(flags) is int and (
        0 < trace_id < _TRACE_ID_END and 0 < span_id < _SPAN_ID_END and 0 <= flags < 256
    ):  # what SpanContext's validation checks, without its keyword call
        return _span_context(trace_id, span_id, carrier[C_PID] != _pid, flags, None)
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=carrier[C_PID] != _pid,
        trace_flags=TraceFlags(flags),
    )


_TRACE_ID_END, _SPAN_ID_END = 2**128, 2**64


def receive(
    carrier: tuple[Any, ...],
    prof: Profile,
    started_ns: int,
    size: int | None = None,
    destination: str | None = None,
    task: str | None = None,
) -> None:
    """Record the consumer side of a carried message and attach its context.

    The receive span is a child of the producer span (so the consumer's side is in the
    producer's trace) and links to it, as OTel's messaging conventions ask of receive
    spans. Its context is then attached to the calling thread or task until its next get
    (or task_done): whatever the consumer does with the message belongs to that trace.
    ``prof``: the queue's ``profile(target, system, operation, "receive", False)``;
    ``destination``: a name of the receiving end's own that overrides the queue's (pipes);
    ``task``: the receiving asyncio task's name.
    """
    now = _time_ns()
    if not started_ns:
        # The get began while no sampled message was in flight on this queue, so before
        # this one was put: it blocked at least from the put until now.
        started_ns = carrier[C_SENT_NS]
    if _attached_get() is not None:
        release()  # (the callers released it before their get; nothing should be left)
    if len(carrier) > C_CONTEXT:  # (producer_context(), inline for in-process carriers)
        parent = _span_context(carrier[C_TRACE_ID], carrier[C_SPAN_ID], False,
                               carrier[C_FLAGS], carrier[C_CONTEXT])
    else:
        parent = producer_context(carrier)
    if destination is None or destination == prof.destination:
        constants, span_name = prof.start, prof.span_name
    else:
        constants = {**prof.start, DESTINATION: destination}
        span_name = f"{prof.operation} {destination}"
    start = constants if sampler_reads_attributes else None
    current = current_context()
    ambient = _span_context_in(current) if current else _INVALID_SPAN_CONTEXT
    # The consumer was inside a trace of its own: keep a way back to it. (SpanContext is
    # a tuple: trace_id, span_id, is_remote, trace_flags, state, is_valid)
    own_trace = ambient[5] and ambient[0] != parent[0]
    if _flight.mirrored:  # (for a child killed before its span is exported)
        from ._flight import note_sampled_receive

        note_sampled_receive(span_name, constants, carrier)
    if runtime.recorder is not None:
        runtime.records.receive(carrier, parent, ambient if own_trace else None, current,
                                span_name, constants, now, started_ns, size, task)
        return
    links = [Link(parent)]
    if own_trace:
        links.append(Link(ambient, {"procscope.messaging.link": "consumer"}))
    span = runtime.tracer.start_span(
        span_name,
        # (given the context in hand, set_span_in_context does not look it up again)
        context=_with_span(NonRecordingSpan(parent), current),
        kind=_CONSUMER,
        attributes=start,
        links=links,
        start_time=min(started_ns, now),
    )
    # (the content is recorded once, on the send span: the consumer got the same value)
    add_attributes(span, receive_attributes(
        {} if start is not None else constants, carrier, _get_native_id(),
        current_thread_name(), now, started_ns, span_pid, size, task,
    ))
    span.end(end_time=now)
    mine = _with_span(span, current)
    _set_current(mine)
    _attached.set((mine, current))


def receive_attributes(
    constants: dict[str, Any], carrier: tuple[Any, ...], thread_id: int, thread_name: str,
    now: int, started_ns: int, pid: int | None, size: int | None, task: str | None = None,
) -> dict[str, Any]:
    """A receive span's attributes (after ``constants``, the queue's), in their order."""
    sent = carrier[C_SENT_NS]
    # (one dict made at once, in the order of a copy updated; no max() calls)
    more = {
        **constants,
        MESSAGE_ID: carrier[C_MESSAGE_ID],
        THREAD_ID: thread_id,
        THREAD_NAME: thread_name,
        SENDER_PID: carrier[C_PID],
        SENDER_THREAD_ID: carrier[C_THREAD_ID],
        SENDER_THREAD_NAME: carrier[C_THREAD_NAME],
        WAIT_TIME: (now - sent if now > sent else 0) / 1e9,
        BLOCK_TIME: (now - started_ns if now > started_ns else 0) / 1e9,
    }
    if pid is not None:
        more[PID] = pid
    if size is not None:
        more[BODY_SIZE] = size
    if task is not None:
        more[TASK_NAME] = task
    return more


def receive_unlinked(prof: Profile, started_ns: int, size: int | None) -> None:
    """A receive span for raw bytes, which carry no context: in the receiver's own trace.

    ``prof``: the pipe end's ``profile(target, system, operation, "receive")``.
    """
    now = _time_ns()
    if runtime.recorder is not None:
        runtime.records.receive_unlinked(prof, started_ns, now, size)
        return
    start = prof.start if sampler_reads_attributes else None
    span = runtime.tracer.start_span(
        prof.span_name,
        kind=_CONSUMER,
        attributes=start,
        start_time=min(started_ns, now),
    )
    add_attributes(span, unlinked_attributes(
        {} if start is not None else prof.start, prof, _get_native_id(),
        current_thread_name(), now, started_ns, span_pid, size,
    ))
    span.end(end_time=now)


def unlinked_attributes(
    constants: dict[str, Any], prof: Profile, thread_id: int, thread_name: str, now: int,
    started_ns: int, pid: int | None, size: int | None,
) -> dict[str, Any]:
    """A raw-bytes receive span's attributes (after ``constants``), in their order."""
    more = constants.copy()
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


# --- the consumer's attached context -----------------------------------------------------------

# (the context we attached, the context it replaced) in this thread or task, or None.
_attached: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "procscope_messaging_attached", default=None
)
attached_get = _attached_get = _attached.get

if _context_var is not None:
    # Read and set the SDK's context variable directly: what otel_context.get_current()
    # and attach() do, without their two calls each (attach's token is never used here).
    current_context: Any = _context_var.get
    _set_current: Any = _context_var.set
else:
    current_context = otel_context.get_current
    _set_current = otel_context.attach


def attach(ctx: Any) -> None:
    release()
    previous = current_context()
    _set_current(ctx)
    _attached.set((ctx, previous))


def release() -> None:
    """Take back the message context this thread or task attached at its last get.

    Only if it is still the current one: when code attached a context of its own on top
    and has not detached it yet, resetting ours would discard theirs. Restoring by
    attaching the previous context (not by resetting a token) also works in a task that
    inherited the attachment from its parent task, where a token would be foreign.
    Called by the patched methods directly: a failure here is logged, never raised.
    """
    try:
        record = _attached.get()
        if record is None:
            return
        _attached.set(None)
        ctx, previous = record
        if current_context() is ctx:
            _set_current(previous)
    except Exception:  # noqa: BLE001
        log_internal_error()
