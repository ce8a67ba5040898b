"""Unsampled messages in the flight recorder's ring (``procscope.core.flight``).

A put, send, get or recv that head sampling left unrecorded appends one record:
``(time, code, thread ident, kept item)`` (a stamped multiprocessing receive's keeps
``(kept item, stamp bytes)``, see :class:`MultiprocessingKind`). ``code`` names the
queue and the call site (``(system, operation)``); the item is kept only when it is an
immutable scalar (a number, a short string or bytes), whose content cannot change
before a dump: anything else is known by its type. Nothing is formatted on the caller's
thread: the queue's name, its constant attributes and the content (scrubbed, and only
under ``capture_content``) are made when the ring is dumped.

An unsampled message through a ``multiprocessing`` queue, pipe or Manager queue carries
its sender's stamp (the time it was sent, the sender's pid, thread native id and name:
after its pickle, see ``_pickler.StampingPickler``, or in a ``_carry.Hop`` through a
Manager), which the receive's record keeps: a receiver's dump names the sender, and both
ends make the message id from the sender's pid and that time (the send record's own),
so two dumps show one message. Otherwise an unsampled message carries nothing to its
receiver. Where both ends are in one dump, on a ``queue.Queue`` or an ``asyncio.Queue``
(first in, first out, in one process), the dump pairs them: the n-th get of the window
took the put the queue's size at the dump points to, checked against the items kept; a
paired put and get share their message id, so ``procscope messages`` shows one message
with its sender and receiver. Otherwise (other queues, a put or a get outside the
window, a mismatch) they are two messages: one with no receiver, one with no sender.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanKind

from procscope.core import flight
from procscope.core.flight import F_A, F_B, F_CODE, F_TIME
from procscope.core.guard import log_internal_error

from . import _core, _side
from ._carry import Hop, Stamped, read_stamp
from ._content import content_repr
from ._naming import made_as, name_made_as, set_own

_IMMUTABLE = frozenset((int, float, complex, bool, str, bytes, type(None)))
_NUMBERS = frozenset((int, float, complex, bool, type(None)))  # (kept as they are, at once)
# Strings and bytes longer than this are known by their length only: the ring's memory
# estimate counts a record at a couple of hundred bytes.
_MAX_KEPT = 256
_time_ns = time.time_ns
_ident = threading.get_ident

# Call sites, by number (a queue keeps its codes in a list indexed by them): (messaging
# system, operation, operation type).
QUEUE_PUT, QUEUE_GET, MP_QUEUE_PUT, MP_QUEUE_GET = 0, 1, 2, 3
PIPE_SEND, PIPE_RECV, ASYNC_PUT, ASYNC_GET = 4, 5, 6, 7
SITES = (
    (_core.SYSTEM_QUEUE, "put", "send"), (_core.SYSTEM_QUEUE, "get", "receive"),
    (_core.SYSTEM_MP_QUEUE, "put", "send"), (_core.SYSTEM_MP_QUEUE, "get", "receive"),
    (_core.SYSTEM_MP_PIPE, "send", "send"), (_core.SYSTEM_MP_PIPE, "recv", "receive"),
    (_core.SYSTEM_ASYNCIO, "put", "send"), (_core.SYSTEM_ASYNCIO, "get", "receive"),
    (_core.SYSTEM_MP_QUEUE, "get", "receive"), (_core.SYSTEM_MP_PIPE, "recv", "receive"),
    (_core.SYSTEM_MANAGER, "put", "send"), (_core.SYSTEM_MANAGER, "get", "receive"),
    (_core.SYSTEM_MANAGER, "get", "receive"),
)
# A multiprocessing receive of a message that brought its sender's stamp has a site (a
# code) of its own: its records are MP_RECEIVE's, the others plain RECEIVE's.
MP_QUEUE_GET_STAMPED, PIPE_RECV_STAMPED = 8, 9
MANAGER_PUT, MANAGER_GET, MANAGER_GET_STAMPED = 10, 11, 12
# multiprocessing's sites, whose other end is in another process: their records are
# MP_SEND's and MP_RECEIVE's (the kept item with what joins the two ends).
_MP_SITES = frozenset((MP_QUEUE_PUT, PIPE_SEND, MP_QUEUE_GET_STAMPED, PIPE_RECV_STAMPED,
                       MANAGER_PUT, MANAGER_GET_STAMPED))
_MP_ANY = _MP_SITES | {MP_QUEUE_GET, PIPE_RECV}
# Called when a multiprocessing queue or pipe end makes its first record of a site (set
# by _mp while instrumented: it puts the stamping pickler in place).
on_first_mp_record: Callable[[], None] | None = None
# Where a queue or pipe end keeps its codes (a class default of None: see _naming).
CODES_ATTR = "_procscope_flight"
_types: dict[type, tuple[str, str]] = {}


def kept(item: Any) -> Any:
    """What a record keeps of a message: an immutable scalar itself; else a tuple of
    strings and ints, ("type", name) or ("len", type name, length) for a long string (a
    tuple is never kept as a value). Only values the garbage collector need not walk."""
    cls = type(item)
    if cls in _IMMUTABLE:
        if (cls is str or cls is bytes) and len(item) > _MAX_KEPT:
            return ("len", cls.__name__, len(item))
        return item
    marker = _types.get(cls)
    if marker is None:
        marker = ("type", cls.__qualname__)
        if len(_types) < 1024:
            _types[cls] = marker
    return marker


MADE_AS = len(SITES)


def _code(target: Any, site: int) -> int:
    """The record code of ``target``'s call site ``site`` (made at its first record)."""
    codes = target._procscope_flight
    if codes is None:
        # A code per site, then (at MADE_AS) what naming the queue needs, read once for
        # its sites: for a dump made after the queue is gone (a queue local to a
        # process's target dies with the target's frame, before the dump of its end).
        codes = [None] * len(SITES)
        codes.append(made_as(target))
        try:
            set_own(target, CODES_ATTR, codes)
        except (AttributeError, TypeError):
            pass  # an object that takes no attributes: a new code each time (rare)
    code = codes[site]
    if code is None:
        if site in _MP_ANY and on_first_mp_record is not None:
            on_first_mp_record()  # (the recorder is on: mp messages carry stamps)
        if site in _MP_SITES:
            kind: MessageKind = MP_SEND if SITES[site][2] == "send" else MP_RECEIVE
        else:
            kind = SEND if SITES[site][2] == "send" else RECEIVE
        code = codes[site] = flight.register_site(kind, target, (*SITES[site], codes[MADE_AS]))
    return code  # type: ignore[no-any-return]


def _site_plain(target: Any, site: tuple[Any, ...]) -> tuple[Any, ...]:
    """(span name, start attributes, queue type) of ``target``'s records at ``site``;
    ``target`` None: the queue is gone, named as it was at its first record."""
    system, operation, operation_type = site[:3]
    queue_type = operation_type == "send"
    if target is None:
        made = site[3]
        prof = _core.named_profile(made[0], name_made_as(made), made[3], system, operation,
                                   operation_type, queue_type)
    else:
        prof = _core.profile(target, system, operation, operation_type, queue_type=queue_type)
    return (prof.span_name, prof.start, prof.queue_type)


class MessageKind(flight.FlightKind):
    """Messages sent (a producer span) or received (a consumer span)."""

    def __init__(self, span_kind: SpanKind, name: str | None = None) -> None:
        self.span_kind = span_kind
        self.name = name or ("send" if span_kind is SpanKind.PRODUCER else "receive")
        self._sites: dict[int, Any] = {}  # code -> site_plain, for the dump under way
        super().__init__()

    def site_plain(self, code: int) -> Any:
        # What the dump needs of the queue, taken when first needed (its name may change
        # later); the content is formatted at revive, in the survivor (the same
        # program's scrubbing rules).
        _kind, ref, site = flight.SITES[code]
        return _site_plain(ref(), site)

    def plain(self, record: tuple[Any, ...]) -> Any:
        return record[F_A]  # (the kept item: already what marshal takes)

    def begin_dump(self) -> None:
        self._sites = {}
        if self is SEND:
            _paired.clear()

    def see_dump(self, records: list[tuple[Any, ...]]) -> None:
        # Once per dump, by one kind: every kind of message is a producer or a consumer,
        # and multiprocessing's producer kind (MP_SEND) paired the same records again.
        if self is SEND:
            _pair(records)

    def shared_id(self, record: tuple[Any, ...]) -> Any:
        return _paired.get(id(record)) if _paired else None

    def share(self, made: tuple[Any, ...], shared: Any) -> None:
        made[4][_core.MESSAGE_ID] = shared

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        code = record[F_CODE]
        sites = self._sites
        site = sites.get(code, sites)
        if site is sites:
            site = sites[code] = self.site_plain(code)

        made = self.revive(site, record[F_A], record[F_TIME])
        if made is not None and _paired:
            shared = _paired.get(id(record))
            if shared is not None:
                made[4][_core.MESSAGE_ID] = shared
        return made

    def revive(self, site: Any, item: Any, at: int) -> tuple[Any, ...] | None:
        if site is None:
            return None
        span_name, start, queue_type = site
        attributes = dict(start)
        attributes[_core.MESSAGE_ID] = f"{random.getrandbits(64):016x}"
        if queue_type is not None:
            attributes[_core.QUEUE_TYPE] = queue_type
        attributes[_core.CONTEXT_PROPAGATED] = False
        size = None
        if type(item) is tuple and item[0] == "len":
            size = item[2]
            content = f"<{item[1]} of {size}>"
        elif type(item) is tuple:  # ("type", name)
            content = f"<{item[1]}>"
        else:
            size = _core.body_size(item)
            content = content_repr(item)
        if size is not None:
            attributes[_core.BODY_SIZE] = size
        if _core.live.capture_content:
            attributes[_core.CONTENT] = content
        return (span_name, self.span_kind, at, at, attributes, (), None)


SEND = MessageKind(SpanKind.PRODUCER)
RECEIVE = MessageKind(SpanKind.CONSUMER)


class MultiprocessingKind(MessageKind):
    """A multiprocessing message, whose other end is another process. A send's record is
    a message's; a stamped receive's keeps ``(kept item, stamp)``, the stamp's bytes as
    the message brought them (``_carry.read_stamp`` reads them at the dump). Both
    ends make the message id from the sender's pid and the time it sent (the send
    record's own time), so the sender's dump and the receiver's give one message without
    a word between them. (A record of four items: a child's mirror writes those as they
    are, without a call per record.)"""

    def site_plain(self, code: int) -> Any:
        site = super().site_plain(code)
        # (with the pid of the process whose records these are: a dead child's, revived
        # by its parent, make their ids with the child's)
        return None if site is None else (*site, _core._pid)

    def revive(self, site: Any, item: Any, at: int) -> tuple[Any, ...] | None:
        if site is None:
            return None
        if self.span_kind is SpanKind.PRODUCER:
            made = super().revive(site[:3], item, at)
            if made is not None:
                made[4][_core.MESSAGE_ID] = message_id(site[3], at)
            return made
        kept_item, stamp = item
        sent, pid, thread_id, thread_name = read_stamp(stamp)
        made = super().revive(site[:3], kept_item, at)
        if made is not None:
            attributes = made[4]
            attributes[_core.MESSAGE_ID] = message_id(pid, sent)
            attributes[_core.SENDER_PID] = pid
            if thread_id:
                attributes[_core.SENDER_THREAD_ID] = thread_id
            if thread_name is not None:
                attributes[_core.SENDER_THREAD_NAME] = thread_name
            attributes[_core.WAIT_TIME] = max(0, at - sent) / 1e9
        return made


MP_SEND = MultiprocessingKind(SpanKind.PRODUCER, "multiprocessing send")
MP_RECEIVE = MultiprocessingKind(SpanKind.CONSUMER, "multiprocessing receive")


def message_id(pid: int, sent: int) -> str:
    """A stamped message's id, as both of its ends make it (hex, as a span's ids): one
    for each time a process sends (the clock is read once a send, and a thread takes
    longer than a nanosecond between two), mixed so that ids of other processes differ."""
    return f"{((pid * 0x9E3779B97F4A7C15) ^ (sent * 0xBF58476D1CE4E5B9)) & _MASK:016x}"


_MASK = 0xFFFF_FFFF_FFFF_FFFF
# The dump under way's paired records: id(record) -> the message id its put and get share.
_paired: dict[int, str] = {}
def _fifo(target: Any) -> bool:
    """A queue whose items leave in the order they came, within one process."""
    cls = type(target)
    return cls is queue.Queue or (cls.__module__ == "asyncio.queues" and cls.__name__ == "Queue")


def _pair(records: list[tuple[Any, ...]]) -> None:
    """Pair the puts and gets of each FIFO queue in ``records`` (see the docstring)."""
    by_code: dict[int, list[tuple[Any, ...]]] = {}
    for record in records:  # (one pass, grouped by code: a queue's put and get codes)
        if len(record) == 4:  # (a message)
            by_code.setdefault(record[F_CODE], []).append(record)
    ends: dict[int, tuple[Any, list[Any], list[Any]]] = {}
    sites = flight.SITES
    for code, group in by_code.items():
        kind, ref, _site = sites[code]
        if kind is not SEND and kind is not RECEIVE:
            continue
        target = ref()
        if target is None or not _fifo(target):
            continue
        entry = ends.get(id(target))
        if entry is None:
            entry = ends[id(target)] = (target, [], [])
        side = entry[1 if kind is SEND else 2]
        # One code a site (the queue keeps its codes), so a group is in the ring's order;
        # a second code for one side would mix orders: not paired (see _code).
        side.append(None if side else group)
    for target, put_groups, get_groups in ends.values():
        if len(put_groups) != 1 or len(get_groups) != 1:
            continue
        puts, gets = put_groups[0], get_groups[0]
        if puts is None or gets is None:
            continue
        try:
            # (less its sampled messages: their puts are spans, not among the records)
            waiting = target.qsize() - _side.in_flight(target)
        except Exception:  # noqa: BLE001 -- a queue that cannot say: not paired
            continue
        # Items already in the queue when the window began: the first gets took those.
        before = waiting - len(puts) + len(gets)
        if before < 0 or before >= len(gets):
            continue
        paired = gets[before:][: len(puts)]
        for put, get in zip(puts, paired):
            if put[F_A] != get[F_A] or put[F_TIME] > get[F_TIME]:
                break  # (appends since the take, or a queue used otherwise: unpaired)
        else:
            for put, get in zip(puts, paired):
                _paired[id(put)] = _paired[id(get)] = f"{random.getrandbits(64):016x}"


class SampledReceiveKind(flight.FlightKind):
    """A sampled message received: its span exists already, so a process's own dump
    leaves it out (``sampled``); but a child killed by a signal may die before its span
    is exported, so its mirror keeps it, with the message's own id (the trace DB shows
    one message, whichever of the two arrives)."""

    name = "sampled receive"
    sampled = True

    def plain(self, record: tuple[Any, ...]) -> Any:
        carrier = record[F_B]
        return (record[F_A], carrier[:9])  # (a carrier that stayed in its process: no state)

    def revive(self, site: Any, plain: Any, at: int) -> tuple[Any, ...] | None:
        return self.span((at, self.code, 0, tuple(plain[0]), tuple(plain[1]), None))

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        span_name, constants = record[F_A]
        carrier = record[F_B]
        at = record[F_TIME]
        attributes = _core.receive_attributes(constants, carrier, 0, "", at, at, None, None)
        del attributes[_core.THREAD_ID], attributes[_core.THREAD_NAME]  # (the dump's)
        return (span_name, SpanKind.CONSUMER, at, at, attributes, (), None)


SAMPLED_RECEIVE = SampledReceiveKind()


def note_sampled_receive(span_name: str, constants: dict[str, Any], carrier: Any) -> None:
    try:
        add = flight.append
        if add is not None:
            flight.count()
            add((_time_ns(), SAMPLED_RECEIVE.code, _ident(), (span_name, constants), carrier,
                 None))
    except Exception:  # noqa: BLE001
        log_internal_error()


def note(target: Any, site: int, item: Any) -> None:
    """Append an unsampled message's record, when the recorder is on:
    ``(time, code, thread ident, kept item)``, nothing the garbage collector walks."""
    try:  # (called outside the wrappers' guards: nothing of ours may reach the program)
        add = flight.append
        if add is not None and not target._procscope_internal:
            codes = target._procscope_flight
            code = codes[site] if codes is not None else None
            if code is None:
                code = _code(target, site)
            flight.count()
            add((_time_ns(), code, _ident(), item if type(item) in _NUMBERS else kept(item)))
    except Exception:  # noqa: BLE001
        log_internal_error()


_NO_CODES = (None,) * len(SITES)  # (a queue or pipe end before its first record)


def send_stamped(target: Any, site: int, item: Any) -> Any:
    """A multiprocessing send's record, when the recorder is on (a message's record);
    returns what to send: the item in a :class:`~._carry.Stamped` envelope with the
    record's time (the item itself if ours failed)."""
    try:
        add = flight.append
        if add is not None and not target._procscope_internal:
            code = (target._procscope_flight or _NO_CODES)[site]  # (inline: hot)
            if code is None:
                code = _code(target, site)
            ident = _ident()
            now = _time_ns()
            flight.count()
            add((now, code, ident, item if type(item) in _NUMBERS else kept(item)))
            return Stamped((item, ident, now))
    except Exception:  # noqa: BLE001
        log_internal_error()
    return item


def send_through_manager(proxy: Any, item: Any) -> Any:
    """A Manager queue's put: its record, and what to send, when the recorder is on: a
    :class:`~._carry.Hop` with the stamp, which stays wrapped in the manager's queue and
    reaches the consumer as the message itself (the sampled way: the stamp cannot follow
    the pickle there, the manager stores what it unpickles)."""
    stamped = send_stamped(proxy, MANAGER_PUT, item)
    try:
        if type(stamped) is Stamped:
            return Hop(item, stamped.stamp())
    except Exception:  # noqa: BLE001
        log_internal_error()
    return item


def note_received(target: Any, site: int, item: Any, stamp: Any) -> None:
    """A stamped multiprocessing receive's record (``site``: a ``*_STAMPED`` one), when
    the recorder is on: ``(time, code, thread ident, (kept item, stamp))``, ``stamp`` the
    bytes the message brought."""
    try:
        add = flight.append
        if add is not None and not target._procscope_internal:
            code = (target._procscope_flight or _NO_CODES)[site]  # (inline: hot)
            if code is None:
                code = _code(target, site)
            flight.count()
            add((_time_ns(), code, _ident(),
                 (item if type(item) in _NUMBERS else kept(item), stamp)))
    except Exception:  # noqa: BLE001
        log_internal_error()
