"""Unsampled messages in the flight recorder's ring (``procscope.core.flight``).

A put, send, get or recv that head sampling left unrecorded appends one record:
``(seq, time, SEND or RECEIVE, thread, queue or pipe end, site, item or None)``. ``site``
is the call site's constant ``(system, operation)``; the item is kept only when it is an
immutable scalar (a number, a short string or bytes), whose content cannot change before
a dump: anything else is known by its type. Nothing is formatted on the caller's thread:
the queue's name, its constant attributes and the content (scrubbed, and only under
``capture_content``) are made when the ring is dumped.

An unsampled message carries nothing to its receiver, so a send and its receive are two
messages to ``procscope messages``: one with no receiver, one with no sender.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from opentelemetry.trace import SpanKind

from procscope.core import flight
from procscope.core.flight import F_A, F_B, F_C, F_TIME

from . import _core
from ._content import content_repr

_IMMUTABLE = frozenset((int, float, complex, bool, str, bytes, type(None)))
# Strings and bytes longer than this are known by their length only: the ring's memory
# estimate counts a record at a couple of hundred bytes.
_MAX_KEPT = 256
_time_ns = time.time_ns
_native_id = threading.get_native_id

# Call sites: (messaging system, operation, operation type).
QUEUE_PUT = (_core.SYSTEM_QUEUE, "put", "send")
QUEUE_GET = (_core.SYSTEM_QUEUE, "get", "receive")
MP_QUEUE_PUT = (_core.SYSTEM_MP_QUEUE, "put", "send")
MP_QUEUE_GET = (_core.SYSTEM_MP_QUEUE, "get", "receive")
PIPE_SEND = (_core.SYSTEM_MP_PIPE, "send", "send")
PIPE_RECV = (_core.SYSTEM_MP_PIPE, "recv", "receive")
ASYNC_PUT = (_core.SYSTEM_ASYNCIO, "put", "send")
ASYNC_GET = (_core.SYSTEM_ASYNCIO, "get", "receive")


def kept(item: Any) -> Any:
    """What a record keeps of a message: an immutable scalar itself, else its type."""
    cls = type(item)
    if cls in _IMMUTABLE:
        if (cls is str or cls is bytes) and len(item) > _MAX_KEPT:
            return (cls, len(item))
        return item
    return cls


class MessageKind(flight.FlightKind):
    """Messages sent (a producer span) or received (a consumer span)."""

    def __init__(self, span_kind: SpanKind) -> None:
        self.span_kind = span_kind
        self.name = "send" if span_kind is SpanKind.PRODUCER else "receive"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        target, site, item = record[F_A], record[F_B], record[F_C]
        system, operation, operation_type = site
        prof = _core.profile(target, system, operation, operation_type,
                             queue_type=operation_type == "send")
        attributes = dict(prof.start)
        attributes[_core.MESSAGE_ID] = f"{random.getrandbits(64):016x}"
        if prof.queue_type is not None:
            attributes[_core.QUEUE_TYPE] = prof.queue_type
        attributes[_core.CONTEXT_PROPAGATED] = False
        size = None
        if type(item) is tuple and len(item) == 2 and item[0] in (str, bytes):
            size = item[1]
            content = f"<{item[0].__name__} of {size}>"
        elif type(item) is type:
            content = f"<{item.__name__}>"
        else:
            size = _core.body_size(item)
            content = content_repr(item)
        if size is not None:
            attributes[_core.BODY_SIZE] = size
        if _core.live.capture_content:
            attributes[_core.CONTENT] = content
        at = record[F_TIME]
        return (prof.span_name, self.span_kind, at, at, attributes, (), None)


SEND = MessageKind(SpanKind.PRODUCER)
RECEIVE = MessageKind(SpanKind.CONSUMER)


class SampledReceiveKind(flight.FlightKind):
    """A sampled message received: its span exists already, so a process's own dump
    leaves it out (``sampled``); but a child killed by a signal may die before its span
    is exported, so its mirror keeps it, with the message's own id (the trace DB shows
    one message, whichever of the two arrives)."""

    name = "sampled receive"
    sampled = True

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        span_name, constants = record[F_A]
        carrier = record[F_B]
        at = record[F_TIME]
        attributes = _core.receive_attributes(constants, carrier, 0, "", at, at, None, None)
        del attributes[_core.THREAD_ID], attributes[_core.THREAD_NAME]  # (the dump's)
        return (span_name, SpanKind.CONSUMER, at, at, attributes, (), None)


SAMPLED_RECEIVE = SampledReceiveKind()


def note_sampled_receive(span_name: str, constants: dict[str, Any], carrier: Any) -> None:
    add = flight.append
    if add is not None:
        add((flight.next_seq(), _time_ns(), SAMPLED_RECEIVE, _native_id(),
             (span_name, constants), carrier, None))


def note(kind: MessageKind, target: Any, site: tuple[str, str, str], item: Any) -> None:
    """Append an unsampled message's record, when the recorder is on (the hottest callers
    inline this)."""
    add = flight.append
    if add is not None and not target._procscope_internal:
        add((flight.next_seq(), _time_ns(), kind, _native_id(), target, site, kept(item)))
