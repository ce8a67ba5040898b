"""A span that ends with an exception writes the flight recorder out.

Any span that reaches procscope's recorder (``recorder.RecordingSpanProcessor``) with an
ERROR status and an ``exception`` event is a trigger: the program's own spans in the
processor's ``on_end``, on the thread that ended them; procscope's recorded spans (its
messaging and lifecycle spans; its state spans record no exceptions) on the recorder's
drain thread, as they become spans. The reason names the span and its exception, as the
other triggers do: ``exception in span handle: ValueError: boom``; the recording links
to the span. An unsampled operation of procscope's has no span: the instrumentors call
``operation_failed`` from an ``except`` around the program's call instead.

The callers check only that the recorder is on and the status is ERROR (a global read
and an identity test a span); everything else is done here, for failed spans alone.

Not triggers:

- a dump's own spans (scope ``procscope.flight``), whose error records are failures
  already written out: they would make dumps of dumps;
- a span whose owner triggers a dump for it with its own reason (a failed thread, task
  or process: ``flight.claim`` before its span ends, and ``flight.dump`` keeps the ids
  of the spans it was given);
- anything less than a second after this process's last dump (``flight.just_dumped``):
  one recording per burst, without a take of the ring and a thread per failing span;
- an ERROR status without an exception (a process's exit code, a signal): no exception
  escaped; the abnormal end has its own trigger; nor ``SystemExit`` or ``GeneratorExit``
  (an exit, whose code is the process's own trigger when it is not 0; a generator
  closed);
- flow control on procscope's messaging spans: a put that finds the queue full
  (``queue.Full``, ``asyncio.QueueFull``) or a get that finds it empty is an error of
  its span, not a failure of the program.

Nothing here raises into the program: errors are logged once (``guard``).
"""

from __future__ import annotations

import sys
from typing import Any

from . import flight
from .guard import log_internal_error

# The instrumentation scope of a dump's spans (_flight_spans.SCOPE_NAME; not imported:
# this module is imported with the recorder, before any dump).
FLIGHT_SCOPE = "procscope.flight"
MESSAGING_SCOPE = "procscope.instrumentation.messaging"
# exception.type's last part (a class's __qualname__) of queue.Full/Empty and
# asyncio.QueueFull/QueueEmpty.
FLOW_CONTROL = frozenset(("Full", "Empty", "QueueFull", "QueueEmpty"))
NOT_FAILURES = frozenset(("SystemExit", "GeneratorExit"))


def _exception_text(events: Any, scope: Any) -> str | None:
    """``ValueError: boom`` from the last ``exception`` event of ``events`` (name,
    attributes pairs), None when there is none or it is no failure (above); ``scope``
    the span's instrumentation scope."""
    for name, attributes in reversed(events):
        if name == "exception" and attributes is not None:
            kind = attributes.get("exception.type") or "Exception"
            short = kind.rpartition(".")[2]  # (procscope's records name the module too)
            if short in NOT_FAILURES or (
                short in FLOW_CONTROL and scope is not None and scope.name == MESSAGING_SCOPE
            ):
                return None
            return f"{kind}: {attributes.get('exception.message', '')}"
    return None


def _flow_control(exc: BaseException) -> bool:
    """queue.Full/Empty, asyncio.QueueFull/QueueEmpty (asyncio only when imported)."""
    import queue

    if isinstance(exc, (queue.Full, queue.Empty)):
        return True
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, (asyncio.QueueFull, asyncio.QueueEmpty))


def operation_failed(name: str, exc: BaseException) -> None:
    """An unsampled operation of procscope's (its span, ``name``, not made: the trace was
    not sampled) raised ``exc`` out of the program's call: the failure goes into the ring
    (a dump shows it as the span's error), then a dump, as a sampled span's error would
    make. Flow control (a full or empty queue), ``SystemExit`` and ``GeneratorExit`` are
    no failures. Called from the instrumentors' ``except`` around the original call,
    only while the recorder is on: nothing is added to a call that does not raise."""
    try:
        if flight.append is None or isinstance(exc, (SystemExit, GeneratorExit)):
            return
        if _flow_control(exc) or flight.just_dumped():
            return
        from .recorded import exception_attributes

        event = exception_attributes(exc)  # (its type and message as a span's would be)
        event["exception.escaped"] = "True"
        text = f"{event['exception.type']}: {event['exception.message']}"
        flight.note(flight.ERROR, name, event, text)
        # Linked to the unsampled trace the operation was in, when it has ids (a request
        # that arrived with a traceparent): other services' records name that trace.
        from opentelemetry import trace

        current = trace.get_current_span().get_span_context()
        flight.dump(f"exception in span {name}: {text}",
                    trigger=current if current.is_valid else None)
    except Exception:  # noqa: BLE001 -- nothing of ours may reach the program
        log_internal_error()


def fire(failure: tuple[str, str, Any] | None, wait: float | None = None) -> None:
    """Dump for ``failure`` ((span name, exception text, SpanContext), from
    ``span_failure`` or ``plain_failure``; None: nothing), unless its span has a trigger
    of its own. ``wait``: as ``flight.dump``'s."""
    if failure is None:
        return
    try:
        name, text, context = failure
        if not flight.was_triggered(context.span_id) and not flight.just_dumped():
            flight.dump(f"exception in span {name}: {text}", trigger=context, wait=wait)
    except Exception:  # noqa: BLE001 -- nothing of ours may reach the program
        log_internal_error()


def span_failure(span: Any) -> tuple[str, str, Any] | None:
    """What ``fire`` needs for ``span`` (a ReadableSpan) ended with an ERROR status, or
    None when it is no trigger."""
    try:
        scope = span.instrumentation_scope
        if scope is not None and scope.name == FLIGHT_SCOPE:
            return None
        text = _exception_text([(event.name, event.attributes) for event in span.events],
                               scope)
        return None if text is None else (span.name, text, span.context)
    except Exception:  # noqa: BLE001
        log_internal_error()
        return None


def span_failed(span: Any) -> None:
    """``span`` ended with an ERROR status, on the thread that ended it: a dump now (made
    on a helper thread) if it is a trigger."""
    fire(span_failure(span))


def plain_failure(plain: tuple[Any, ...], origin: Any) -> tuple[str, str, Any] | None:
    """``span_failure`` of a plain span (``recorded.P_*``) with its (resource, scope)."""
    try:
        from opentelemetry.trace import SpanContext, TraceFlags

        from .recorded import P_EVENTS, P_FLAGS, P_NAME, P_SPAN_ID, P_TRACE_ID

        scope = origin[1] if origin else None
        if scope is not None and scope.name == FLIGHT_SCOPE:
            return None
        text = _exception_text([(event[0], event[1]) for event in plain[P_EVENTS]], scope)
        if text is None:
            return None
        context = SpanContext(plain[P_TRACE_ID], plain[P_SPAN_ID], False,
                              TraceFlags(plain[P_FLAGS] & 0xFF))
        return plain[P_NAME], text, context
    except Exception:  # noqa: BLE001
        log_internal_error()
        return None
