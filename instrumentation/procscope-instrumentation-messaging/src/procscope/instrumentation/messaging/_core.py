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
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from ._common import head_sampling, shared_state
from ._common.guard import log_internal_error
from ._common.saferepr import safe_repr

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

_live = shared_state.settings()
_state_dict: dict[str, Any] = shared_state.get().__dict__
_time_ns = time.time_ns
_getrandbits = random.getrandbits


class _Runtime:
    """The instrumentor's state while it is on; plain attributes read on each call."""

    def __init__(self) -> None:
        self.tracer: Any = None


runtime = _Runtime()


# --- the gate ---------------------------------------------------------------------------------

def _find_context_var() -> contextvars.ContextVar[Any] | None:
    """The SDK's own context variable, when it is the contextvars runtime (the default).

    Reading it directly instead of through ``trace.get_current_span()`` saves four Python
    calls, which is most of the budget of an unsampled put+get.
    """
    runtime_context = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime_context, "_current_context", None)
    return var if isinstance(var, contextvars.ContextVar) else None


_context_var = _find_context_var()
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


# --- carriers and spans -------------------------------------------------------------------------

def thread_identity() -> tuple[int, str]:
    return threading.get_native_id(), threading.current_thread().name


def start_send(
    system: str,
    operation: str,
    destination: str,
    queue_type: str,
    item: object,
    size: int | None = None,
) -> tuple[Any, tuple[Any, ...] | None]:
    """Start a producer span; return it with the carrier for the message (None if unsampled)."""
    thread_id, thread_name = thread_identity()
    attributes: dict[str, Any] = {
        SYSTEM: system,
        OPERATION_TYPE: "send",
        OPERATION_NAME: operation,
        DESTINATION: destination,
        QUEUE_TYPE: queue_type,
        THREAD_ID: thread_id,
        THREAD_NAME: thread_name,
        PID: os.getpid(),
    }
    if size is None:
        size = body_size(item)
    if size is not None:
        attributes[BODY_SIZE] = size
    if _live.capture_content:
        attributes[CONTENT] = safe_repr(item, CONTENT_LIMIT)
    # Drawn before the span starts, so that it is one of its start attributes (a
    # set_attribute afterwards costs a lock and a second validation).
    message_id = f"{_getrandbits(64):016x}"
    attributes[MESSAGE_ID] = message_id
    span = runtime.tracer.start_span(
        f"{operation} {destination}", kind=SpanKind.PRODUCER, attributes=attributes
    )
    span_context = span.get_span_context()
    if not (span_context[5] and span_context[3] & 1):  # valid and sampled
        return span, None
    carrier = (
        span_context.trace_id,
        span_context.span_id,
        int(span_context.trace_flags),
        message_id,
        destination,
        os.getpid(),
        thread_id,
        thread_name,
        _time_ns(),
    )
    return span, carrier


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
        if exc is not None:
            span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        span.end()
    except Exception:  # noqa: BLE001 -- never let ours hide or replace the user's outcome
        log_internal_error()


def producer_context(carrier: tuple[Any, ...]) -> SpanContext:
    return SpanContext(
        trace_id=carrier[C_TRACE_ID],
        span_id=carrier[C_SPAN_ID],
        is_remote=carrier[C_PID] != os.getpid(),
        trace_flags=TraceFlags(carrier[C_FLAGS]),
    )


def receive(
    carrier: tuple[Any, ...],
    system: str,
    operation: str,
    destination: str | None,
    queue_type: str,
    started_ns: int,
    item: object = None,
    size: int | None = None,
) -> None:
    """Record the consumer side of a carried message and attach its context.

    The receive span is a child of the producer span (so the consumer's side is in the
    producer's trace) and links to it, as OTel's messaging conventions ask of receive
    spans. Its context is then attached to the calling thread or task until its next get
    (or task_done): whatever the consumer does with the message belongs to that trace.
    """
    now = _time_ns()
    if not started_ns:
        # The get began while no sampled message was in flight on this queue, so before
        # this one was put: it blocked at least from the put until now.
        started_ns = carrier[C_SENT_NS]
    parent = producer_context(carrier)
    thread_id, thread_name = thread_identity()
    name = destination or carrier[C_DESTINATION]
    attributes: dict[str, Any] = {
        SYSTEM: system,
        OPERATION_TYPE: "receive",
        OPERATION_NAME: operation,
        DESTINATION: name,
        MESSAGE_ID: carrier[C_MESSAGE_ID],
        THREAD_ID: thread_id,
        THREAD_NAME: thread_name,
        PID: os.getpid(),
        SENDER_PID: carrier[C_PID],
        SENDER_THREAD_ID: carrier[C_THREAD_ID],
        SENDER_THREAD_NAME: carrier[C_THREAD_NAME],
        WAIT_TIME: max(0, now - carrier[C_SENT_NS]) / 1e9,
        BLOCK_TIME: max(0, now - started_ns) / 1e9,
    }
    if size is not None:
        attributes[BODY_SIZE] = size
    # (the content is recorded once, on the send span: the consumer got the same value)
    links = [Link(parent)]
    ambient = trace.get_current_span().get_span_context()
    if ambient.is_valid and ambient.trace_id != parent.trace_id:
        # The consumer was inside a trace of its own: keep a way back to it.
        links.append(Link(ambient, {"procscope.messaging.link": "consumer"}))
    span = runtime.tracer.start_span(
        f"{operation} {name}",
        context=trace.set_span_in_context(NonRecordingSpan(parent)),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        start_time=min(started_ns, now),
    )
    span.end(end_time=now)
    attach(trace.set_span_in_context(span))


def receive_unlinked(
    system: str, operation: str, destination: str, queue_type: str, started_ns: int,
    size: int | None,
) -> None:
    """A receive span for raw bytes, which carry no context: in the receiver's own trace."""
    now = _time_ns()
    thread_id, thread_name = thread_identity()
    attributes: dict[str, Any] = {
        SYSTEM: system,
        OPERATION_TYPE: "receive",
        OPERATION_NAME: operation,
        DESTINATION: destination,
        QUEUE_TYPE: queue_type,
        THREAD_ID: thread_id,
        THREAD_NAME: thread_name,
        PID: os.getpid(),
        BLOCK_TIME: max(0, now - started_ns) / 1e9,
        CONTEXT_PROPAGATED: False,
    }
    if size is not None:
        attributes[BODY_SIZE] = size
    span = runtime.tracer.start_span(
        f"{operation} {destination}",
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        start_time=min(started_ns, now),
    )
    span.end(end_time=now)


# --- the consumer's attached context -----------------------------------------------------------

# (the context we attached, the context it replaced) in this thread or task, or None.
_attached: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "procscope_messaging_attached", default=None
)
attached_get = _attached.get


def attach(ctx: Any) -> None:
    release()
    previous = otel_context.get_current()
    otel_context.attach(ctx)
    _attached.set((ctx, previous))


def release() -> None:
    """Take back the message context this thread or task attached at its last get.

    Only if it is still the current one: when code attached a context of its own on top
    and has not detached it yet, resetting ours would discard theirs. Restoring by
    attaching the previous context (not by resetting a token) also works in a task that
    inherited the attachment from its parent task, where a token would be foreign.
    """
    record = _attached.get()
    if record is None:
        return
    _attached.set(None)
    ctx, previous = record
    if otel_context.get_current() is ctx:
        otel_context.attach(previous)
