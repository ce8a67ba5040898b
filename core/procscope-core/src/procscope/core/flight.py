"""The flight recorder: the last seconds of unsampled work, written out when something fails.

At a sample rate below 1 most work leaves no span. With the recorder on, each unsampled
message sent or received, state change, and process, thread or task event still appends
one compact record (a tuple, no SDK object) to a bounded ring of this process:

    (time_ns, code, thread ident, a, b, c)    (a message: (time_ns, code, ident, item))

``code`` names a :class:`FlightKind`, which turns the record into span values only when
the ring is dumped, and what the record is about (a queue and its call site); ``a``,
``b``, ``c`` are the kind's own. The
ring is a ``deque`` with a ``maxlen`` derived from ``flight_memory`` (``RECORD_BYTES`` a
record), so the oldest record goes out first and an append never allocates more; records
older than ``flight_window`` are left out of a dump. ``seq`` counts every record, so a
dump knows how many were overwritten before it.

Hot paths read the module attribute :data:`append` (None while the recorder is off),
call :data:`count` and append ``(time_ns(), code, get_ident(), a, b, c)``: ``code`` names
the record's :class:`FlightKind` and what it is about (:data:`SITES`); the thread's
``threading`` ident costs a tenth of its native id (a system call), and a dump names the
thread (native id, name) from the threads alive and the threads' end records.

A dump (:func:`dump`; a span's error triggers one from ``_flight_triggers``) takes every
record out of the ring and makes them into ordinary spans (``_flight_spans``), one trace
per dump.
"""

from __future__ import annotations

import collections
import gc
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import inherited
from .settings import DEFAULT_FLIGHT_MEMORY as DEFAULT_MEMORY
from .settings import DEFAULT_FLIGHT_WINDOW as DEFAULT_WINDOW

# The estimate the memory cap is divided by: a 7-tuple (120 B), its three large ints
# (32 B each); ``a``, ``b``, ``c`` are shared objects (a queue, a call site, a name) or
# small ones. benchmarks/flight/bench_flight.py measures the real figure.
RECORD_BYTES = 200
# Triggers closer together than this make one dump (one trace): a worker's exception
# and its abnormal exit a moment later are one story.
MERGE_SECONDS = 1.0

F_TIME, F_CODE, F_THREAD, F_A, F_B, F_C = range(6)

# Read by the hot paths: ``append`` is None while the recorder is off in this process.
# ``count`` (called once per record, its value dropped) counts what was appended, so a
# dump knows how many records were overwritten; always callable (a caller that read
# ``append`` just before a stop() still appends, to a ring no longer read: never an
# error in the program's thread).
append: Callable[[tuple[Any, ...]], None] | None = None
count: Callable[[], int] = itertools.count().__next__
# True while this process's ring is mirrored to disk (a child: _flight_mirror). Records
# of sampled work are kept only then, for a parent to recover if the child is killed.
mirrored = False


# Every kind by its name: a dead child's mirrored records name their kind.
KINDS: dict[str, FlightKind] = {}
# A record's code is an index here: (kind, a reference to what the record is about, or
# None, and the kind's data for it). Codes, not objects, in the records: a tuple of ints
# and strings is untracked by the garbage collector, which would otherwise walk the
# whole ring again and again (that was most of a record's cost). Never shrinks: one
# entry per kind, and per queue and call site for messages.
SITES: list[tuple[FlightKind, Any, Any]] = []


def register_site(kind: FlightKind, target: Any = None, data: Any = None) -> int:
    """A new code for records of ``kind`` about ``target`` (held by a weak reference
    when it takes one: a record must not keep a queue alive)."""
    ref: Any = None
    if target is not None:
        try:
            ref = weakref.ref(target)
        except TypeError:
            ref = lambda target=target: target  # noqa: E731 -- (no weak reference: held)
    # No lock: a (fork-safe) lock was most of the cost of a new queue's first records,
    # about 1 us of each 1.3 us (a program of short-lived queues has many). list.append
    # is atomic and SITES never shrinks, so the entry is at the end or, when other
    # threads appended meanwhile, a few places before it: found by identity.
    entry = (kind, ref, data)
    SITES.append(entry)
    code = len(SITES) - 1
    while SITES[code] is not entry:
        code -= 1
    return code


def kind_of(record: tuple[Any, ...]) -> FlightKind:
    return SITES[record[F_CODE]][0]


class FlightKind:
    """Turns one kind of flight record into span values, at dump time.

    ``span(record)`` returns ``(name, span kind, start, end, attributes, events, error)``
    or None to leave the record out: ``attributes`` a dict (the dump adds the thread,
    process and flight attributes), ``events`` a list of ``(name, attributes, time)``,
    ``error`` a status description or None. ``plain(record)`` is what a child's disk
    mirror keeps of it (values ``marshal`` takes), with ``site_plain(code)``, what the
    records of one code share (written once per chunk); ``revive(site, plain, time)``
    makes the span values again, in the survivor. By default the plain form is the span
    values themselves; a kind whose span() is dear (messages) keeps less and makes the
    rest at ``revive``. A kind registers itself by its ``name``, unique.
    """

    name = "record"
    # True for records of sampled work, whose spans exist: only a dead child's mirror
    # (whose spans may not have been exported) makes them into spans.
    sampled = False

    def __init__(self) -> None:
        KINDS[self.name] = self
        self.code = register_site(self)  # (records whose kind needs no site of its own)

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def begin_dump(self) -> None:
        """Called before a dump makes spans of any record (a kind may cache per dump)."""

    def see_dump(self, records: list[tuple[Any, ...]]) -> None:
        """Called with all the dump's records after ``begin_dump`` (a kind may relate
        records to each other, as messages pair a put with its get)."""

    def site_plain(self, code: int) -> Any:
        """What records of ``code`` share, for the mirror (written once per chunk)."""
        return None

    def plain(self, record: tuple[Any, ...]) -> Any:
        made = self.span(record)
        if made is None:
            return None
        name, kind, start, end, attributes, events, error = made
        return (name, int(kind.value), start, end, attributes, tuple(events or ()), error)

    def revive(self, site: Any, plain: Any, at: int) -> tuple[Any, ...] | None:
        from opentelemetry.trace import SpanKind

        name, kind, start, end, attributes, events, error = plain
        return (name, SpanKind(kind), start, end, dict(attributes), list(events), error)

    def shared_id(self, record: tuple[Any, ...]) -> Any:
        """What ``see_dump`` gave ``record`` in common with another record of the dump
        (a message's id, shared by its put and its get), or None; :meth:`share` puts it
        back into span values made by :meth:`revive` (a staged recording's)."""
        return None

    def share(self, made: tuple[Any, ...], shared: Any) -> None:
        """Give ``made`` (span values) what :meth:`shared_id` returned for its record."""


class EventKind(FlightKind):
    """A process, thread or task event, recorded when it ends: ``a`` the span's name,
    ``b`` its attributes (a dict or None), ``c`` its start time (None: an instant)."""

    name = "event"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        from opentelemetry.trace import SpanKind

        end = record[F_TIME]
        start = record[F_C] or end
        return (record[F_A], SpanKind.INTERNAL, min(start, end), end, dict(record[F_B] or {}),
                (), None)


class ErrorKind(FlightKind):
    """An exception that escaped: ``a`` the span's name, ``b`` the exception event's
    attributes, ``c`` the status description."""

    name = "error"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        from opentelemetry.trace import SpanKind

        at = record[F_TIME]
        event = dict(record[F_B] or {})
        attributes = {"error.type": event.get("exception.type", "error")}
        return (record[F_A], SpanKind.INTERNAL, at, at, attributes,
                [("exception", event, at)], record[F_C] or "error")


class SampledEventKind(EventKind):
    """The end of sampled work (a thread whose span exists): kept so that a dump can name
    the thread of the unsampled records it made (its unsampled messages), since
    threading forgets a thread once it ends; not made into a span of its own, except from
    a dead child's mirror."""

    name = "sampled_event"
    sampled = True


EVENT = EventKind()
SAMPLED_EVENT = SampledEventKind()
ERROR = ErrorKind()


class _Ring:
    """This process's ring and what a dump needs to know about it."""

    def __init__(self, window: float, memory: int) -> None:
        self.window_ns = int(window * 1e9)
        self.memory = memory
        self.capacity = max(64, memory // RECORD_BYTES)
        self.records: collections.deque[tuple[Any, ...]] = collections.deque(
            maxlen=self.capacity
        )
        self.counter = itertools.count()
        self.taken_count = 0  # records appended up to the last take
        self.pid = os.getpid()


_ring: _Ring | None = None
_lock = threading.Lock()
# The last dump of this process: (monotonic time, trace id, root span id, reason).
_last_dump: list[Any] = [0.0, 0, 0, ""]
_counts = {"dumps": 0, "merged": 0, "records": 0, "overwritten": 0, "expired": 0}
# The ids of the last spans whose failure has a trigger of its own (``claim``, and
# ``dump(trigger=...)``): a failed thread, task or process triggers with its own reason,
# and its span's error, seen again as it ends or becomes a span (_flight_triggers), must
# not trigger again (on another thread, maybe before the owner's own trigger).
_triggered: collections.deque[int] = collections.deque(maxlen=64)


def claim(span_context: Any) -> None:
    """The failure of this span triggers a dump of its own: its error is no trigger.
    Called before the span ends."""
    span_id = getattr(span_context, "span_id", None)
    if span_id:
        _triggered.append(span_id)


def just_dumped() -> bool:
    """Whether this process dumped less than ``MERGE_SECONDS`` ago; if so, counted as a
    merged trigger. A span's error then adds nothing to that recording: in a storm of
    failing spans a dump per span (a take of the ring and a helper thread, about 140 us
    each) would cost the program more than the recording is worth; what comes after
    stays in the ring for the next one."""
    if time.monotonic() - _last_dump[0] < MERGE_SECONDS:
        _counts["merged"] += 1
        return True
    return False


def was_triggered(span_id: int) -> bool:
    """Whether the span ``span_id`` has a trigger of its own (among the last 64)."""
    return span_id in _triggered


# What the records are about, held from a process's failure to the dump it triggers at
# the process's end (hold_targets).
_held_targets: list[Any] = []


def hold_targets() -> None:
    """Keep what the records are about alive until the next dump. A process's target
    failed: its locals (a queue of its own among them) go as the exception is let go,
    before the dump its failure triggers when the process ends, and a put could no longer
    be paired with its get there (the queue's size is read at the dump)."""
    if append is not None:
        from ._flight_spans import _live_targets

        _held_targets[:] = _live_targets()


def note(kind: FlightKind, a: Any = None, b: Any = None, c: Any = None) -> None:
    """Append one record (for paths that are not hot: messages have their own)."""
    try:
        add = append
        if add is not None:
            count()
            add((time.time_ns(), kind.code, threading.get_ident(), a, b, c))
    except Exception:  # noqa: BLE001 -- nothing of ours may reach the program
        from .guard import log_internal_error

        log_internal_error()


def start(window: float = DEFAULT_WINDOW, memory: int = DEFAULT_MEMORY) -> None:
    """Switch the recorder on in this process (a new, empty ring)."""
    global _ring, append, count
    ring = _Ring(window, memory)
    _ring = ring
    count = ring.counter.__next__
    append = ring.records.append
    # Imported now, once, rather than by every fork child at its mirror's start (about
    # 1 ms of each child's start; a spawn child imports it at its set-up either way).
    from . import _flight_spans  # noqa: F401


# How long stop() (procscope.shutdown) waits for dumps still being made.
STOP_WAIT_SECONDS = 1.0


def stop() -> None:
    """Switch the recorder off (what the ring held is dropped), once the dumps being made
    have reached the processors (``STOP_WAIT_SECONDS`` without progress, see
    ``_flight_spans.wait_for_dumps``)."""
    global _ring, append
    append = None
    _ring = None
    from . import _flight_spans

    _flight_spans.wait_for_dumps(STOP_WAIT_SECONDS)


def is_on() -> bool:
    return append is not None


def settings() -> tuple[float, int] | None:
    """``(window seconds, memory bytes)`` while on, else None."""
    ring = _ring
    return None if ring is None else (ring.window_ns / 1e9, ring.memory)


def _after_fork_in_child() -> None:
    # The parent's records are the parent's: the child starts with an empty ring and a
    # new lock (a thread of the parent may have held it at the fork). The inherited ring
    # is not emptied here but kept, to be freed a little at a time (procscope.core
    # .inherited: freeing it all at the fork cost a fork child up to 27 ms); ``append``
    # is rebound to the new ring, as every hot path reads it at each record.
    global _lock, append
    _lock = threading.Lock()
    _last_dump[:] = [0.0, 0, 0, ""]
    ring = _ring
    if ring is not None:
        inherited.keep(ring.records)
        ring.records = collections.deque(maxlen=ring.capacity)
        if append is not None:
            append = ring.records.append
        ring.taken_count = appended(ring)
        ring.pid = os.getpid()
    # Only a module already imported has a mirror or a handler to reset: importing one
    # here would cost every fork child its import (about 10 ms) where the recorder was
    # never started (procscope imported by a plugin, not set up).
    for name in (_MIRROR, _SIGNAL):
        module = sys.modules.get(name)
        if module is not None:
            module.after_fork_in_child()


_MIRROR = __name__.rpartition(".")[0] + "._flight_mirror"
_SIGNAL = __name__.rpartition(".")[0] + "._flight_signal"


def _before_fork() -> None:
    # Once the ring is full each record appended pushes one out, which leaves the garbage
    # collector's count of young objects where it was: no collection runs, and the records
    # stay tracked as young objects, never examined. A fork child's first collection then
    # walks every one of them (170,000 records: about 20 ms, and each page it writes a
    # header in is copied). One young collection here, in the parent, examines them once
    # for all its children: a record holds only values the collector need not walk, so
    # it is untracked. Skipped when the program turned the collector off (it may freeze
    # its objects before forking, as gc.freeze's documentation advises).
    ring = _ring
    if ring is not None and ring.records and gc.isenabled():
        try:
            gc.collect(0)
        except Exception:  # noqa: BLE001 -- a fork hook must not fail the fork
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def take() -> tuple[list[tuple[Any, ...]], int, int]:
    """Every record now in the ring, oldest first, within the window: (records,
    overwritten since the last take, expired: older than the window)."""
    ring = _ring
    if ring is None:
        return [], 0, 0
    records = ring.records
    total = appended(ring)
    # popleft is atomic: records appended meanwhile stay for the next dump (and may be
    # taken now without being counted yet: the count is off by those few, at most).
    taken = [records.popleft() for _ in range(len(records))]
    overwritten = max(0, total - ring.taken_count - len(taken))
    ring.taken_count = max(total, ring.taken_count + len(taken))
    if not taken:
        return [], overwritten, 0
    oldest = time.time_ns() - ring.window_ns
    expired = 0
    while expired < len(taken) and taken[expired][F_TIME] < oldest:
        expired += 1
    return taken[expired:], overwritten, expired


def appended(ring: _Ring) -> int:
    """How many records were appended to ``ring`` so far (its counter, not advanced)."""
    # repr() reads it without advancing it ("count(41)"); __reduce__ would too, but
    # itertools' pickling is deprecated from Python 3.12.
    return int(repr(ring.counter)[6:-1])


def counts() -> dict[str, int]:
    """This process's dumps, merged triggers, records written, overwritten, expired."""
    return dict(_counts)


def dump(
    reason: str, *, trigger: Any = None, wait: float | None = None,
) -> bool:
    """Write the ring out as spans, one trace (see ``_flight_spans``); False when the
    recorder is off. ``trigger``: the SpanContext of the span that failed (linked);
    ``wait``: seconds to wait for the spans to reach the processors (an exit path), else
    they are made on a helper thread, off the dying one. A dump within
    ``MERGE_SECONDS`` of the last one joins its trace."""
    if _ring is None:
        return False
    from . import _flight_spans

    claim(trigger)
    mark = None
    if mirrored:  # (a child: its newest records to its mirror first, see _flight_mirror.sync)
        from . import _flight_mirror

        mark = _flight_mirror.sync()
    with _lock:
        now = time.monotonic()
        merged = now - _last_dump[0] < MERGE_SECONDS and _last_dump[1]
        taken, overwritten, expired = take()
        if merged:
            _counts["merged"] += 1
            trace_id, root_id = _last_dump[1], _last_dump[2]
            reason = _last_dump[3]
        else:
            _counts["dumps"] += 1
            trace_id, root_id = _flight_spans.new_ids()
        _last_dump[:] = [now, trace_id, root_id, reason]
        _counts["records"] += len(taken)
        _counts["overwritten"] += overwritten
        _counts["expired"] += expired
    if merged and not taken:
        return True
    job = _flight_spans.Dump(
        reason, trace_id, root_id, None if merged else trigger, taken, overwritten, expired,
        _ring.window_ns / 1e9 if _ring is not None else DEFAULT_WINDOW, root=not merged,
        thread_names=_flight_spans._thread_names(taken),
    )
    job.mirror_mark = mark
    _held_targets.clear()  # (the job holds them now: Dump.targets)
    _flight_spans.deliver(job, wait)
    return True
