"""The recorder: a compact record on the caller's thread, the span made off it.

An instrumentation point that would have built an SDK span (start it, give it twenty
attributes, end it, push it through a processor chain: 10 to 25 us on the caller's thread)
instead draws the span's ids, takes the times, and appends one tuple to the recorder's
buffer: about a microsecond. A drain thread turns records into ordinary
``ReadableSpan`` objects (names, kinds, attributes, events, links, status, times) and
hands them to the span processors behind :class:`RecordingSpanProcessor`, which is
installed on the tracer provider in their place. Spans that the program makes itself go
through that processor synchronously, as before. With a record sink (the trace DB, when
it is the only consumer), the drain gives it records' plain spans instead, no
``ReadableSpan`` made (see ``sink``).

A record is a tuple (see ``R_*``): who turns it into a span (its :class:`RecordKind`),
start and end times, trace id, span id, parent span id (0 for a root), whether the parent
is remote, trace flags, trace state, and the kind's own data. The ids are drawn at the
event, so what user code sees (carriers, parents, links, the current span) is exactly
what it would be with SDK spans. The same tuples are what the flight recorder keeps and
what a child can ship to the DB owner: nothing in a record refers to a live SDK object.

Nothing is lost silently. The buffer holds at most ``capacity`` records; when it is full
the ``overflow`` policy decides: ``wait`` (bounded backpressure: the appending thread
waits for room, at most ``wait_limit`` seconds) or ``drop``. Every record not kept is
counted (:func:`procscope.core.losses.count_lost` when present, and ``lost``).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import StatusCode

from . import _flight_triggers, flight, inherited, shared_state
from .guard import log_internal_error, raise_internal_errors
from .head_sampling import records_every_trace

_logger = logging.getLogger("procscope")
_ERROR = StatusCode.ERROR


def _failed(span: Any) -> bool:
    """Whether ``span`` (a ReadableSpan, or what a kind made) has an ERROR status."""
    return getattr(getattr(span, "status", None), "status_code", None) is _ERROR


def _plain_failed(plain: Any) -> bool:
    """Whether a plain span (``recorded.P_*``; P_STATUS_CODE is 10) has an ERROR status."""
    return type(plain) is tuple and len(plain) > 10 and plain[10] == 2

# Record layout (a tuple; kinds may add fields after R_DATA).
R_KIND, R_START, R_END, R_TRACE_ID, R_SPAN_ID, R_PARENT_ID = 0, 1, 2, 3, 4, 5
R_PARENT_REMOTE, R_FLAGS, R_STATE, R_DATA = 6, 7, 8, 9

OVERFLOW_POLICIES = ("wait", "drop")
DEFAULT_CAPACITY = 32_768
# How long an appending thread waits for room under the "wait" policy, with no record
# leaving the buffer meanwhile, before the record is dropped and counted: long enough to
# ride out a slow export, short enough that a stalled exporter cannot stop the program.
# While records do leave (the export is slow but working) the thread waits on, up to
# PROGRESS_WAIT_CAP in all: at full recall the program runs at the pace of its recording.
DEFAULT_WAIT_LIMIT = 5.0
PROGRESS_WAIT_CAP = 60.0
# The drain runs at least this often, and sooner when the buffer is an eighth full.
DRAIN_INTERVAL = 0.05
# The same below a sample rate of 1 (head sampling, not tail): the spans recorded then
# come a few at a time, and each delivery to the trace DB is a transaction of its own
# (from a child, a round trip to the DB's owner and the owner's transaction, about
# 0.7 ms of the owner's CPU however few spans it holds). Every 50 ms that was 20 a second
# from every busy process, for a handful of spans each; every 200 ms, a quarter of that
# (docs/performance.md, "Flight recorder"), and what a SIGKILL can take with it (spans
# not yet delivered) stays within the flight recorder's own 100-200 ms.
SAMPLED_DRAIN_INTERVAL = 0.2
# Records per delivery: to processors (each span queued for a batch processor), or to a
# record sink, where a delivery is one transaction and a commit's cost is spread over it.
DOWNSTREAM_BATCH = 512
SINK_BATCH = 4096
# The program has recorded nothing for this long: the drain calls the idle hook (a sink's
# deferred work, such as the trace DB's span backlog) once a tick until it says it is done,
# then again only every IDLE_RECHECK (another process may have left work meanwhile).
IDLE_AFTER = 0.5
IDLE_RECHECK = 2.0
# ... and only while the program itself uses less than this share of a CPU (its threads'
# CPU time, ours left out): a program that computes without recording anything is not
# idle, and must not share its GIL with that work.
IDLE_CPU_SHARE = 0.3
# How long a flush or shutdown that meets a failed recorded span waits for the flight
# recorder's dump it triggers (see _fire).
FLIGHT_CALLER_WAIT = 1.0


class RecordKind:
    """Turns records of one kind into spans. Subclassed by each instrumentor.

    ``materialise`` runs on the drain thread and returns a ``ReadableSpan``; it may read
    only the record and what the kind itself holds (its tracer's resource, scope and
    limits), never live state of the program.
    """

    def materialise(self, record: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def plain(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """The span as plain values (``procscope.core.recorded``), for a record sink."""
        raise NotImplementedError

    def origin(self, record: tuple[Any, ...]) -> tuple[Any, Any]:
        """(resource, instrumentation scope) of the span: one tuple object per pair."""
        raise NotImplementedError


def _count_lost(count: int, reason: str) -> None:
    try:
        from . import losses  # type: ignore[attr-defined]  # (the loss counters)
    except ImportError:
        return
    losses.count_lost(count, reason)  # type: ignore[attr-defined]


class RecordingSpanProcessor:
    """A span processor that owns a recorder and the processors behind it.

    Installed on the tracer provider instead of ``downstream``: the program's own spans
    pass through synchronously (``on_start``/``on_end``), and records appended with
    :meth:`append` reach the same processors from the drain thread, in the order they
    were appended. ``force_flush`` first drains every record appended before the call,
    then flushes ``downstream``: the documented way to see everything recorded so far.
    """

    def __init__(
        self,
        downstream: Sequence[Any],
        capacity: int = DEFAULT_CAPACITY,
        overflow: str = "wait",
        wait_limit: float = DEFAULT_WAIT_LIMIT,
        sink: Any = None,
        idle: Any = None,
    ) -> None:
        self.downstream = tuple(downstream)
        # A record sink takes records' plain spans instead of downstream taking their
        # ReadableSpans: ``sink(items)``, items (plain span, (resource, scope)) in order,
        # stores them before it returns, counts what it could not store, never raises.
        # Given only when downstream would do nothing else with them (the trace DB
        # behind procscope's batch processor, alone); the program's own spans still go
        # downstream.
        self.sink = sink
        # ``idle()``: called on the drain thread when nothing was recorded for IDLE_AFTER
        # s; one short step of deferred work, True when there is none left. Never raises.
        self.idle = idle
        self._batch_size = SINK_BATCH if sink is not None else DOWNSTREAM_BATCH
        self.capacity = max(16, int(capacity))
        self.overflow = overflow if overflow in OVERFLOW_POLICIES else "wait"
        self.wait_limit = wait_limit
        self.lost = 0
        self._wake_at = max(1, self.capacity // 8)
        self._shutdown = False
        self._failure: Exception | None = None
        self._init_process_state()
        self._start_thread()
        if hasattr(os, "register_at_fork"):
            # A weak reference: the hook must not keep a shut-down processor alive.
            ref = weakref.WeakMethod(self._after_fork_in_child)

            def after_in_child() -> None:
                method = ref()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    # --- state new in every process -------------------------------------------------------

    def _init_process_state(self) -> None:
        # deque.append and popleft are atomic in CPython: appending threads and the drain
        # thread share the buffer without a lock. Only waiting for room takes one.
        self._buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self._room = threading.Condition(threading.Lock())
        # Serialises draining: the drain thread and a force_flush on another thread must
        # not deliver interleaved batches (processors see records in appended order).
        self._draining = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_ident: int | None = None
        self._in_hand = 0
        # Recorded spans that failed in the batch being drained (flight recorder triggers,
        # made when the drain lets go of its lock: see _fire). Used under that lock only.
        self._failures: list[Any] = []
        self._pid = os.getpid()
        self.append = self._append_and_start if self._shutdown is False else self._append_lost

    def _after_fork_in_child(self) -> None:
        # The parent's records are the parent's to deliver: the child starts empty, with
        # new locks (another thread of the parent may have held them at the fork) and no
        # thread until its first record, so a child that records nothing has no thread of
        # ours (what a program that counts its threads after a fork expects). The
        # parent's undelivered records are kept, to be freed a little at a time
        # (procscope.core.inherited), not all at the fork.
        inherited.keep(self._buffer)
        self._init_process_state()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name="procscope-recorder", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: force_flush delivers instead
            return
        self._thread = thread
        self.append = self._append

    # --- the hot path ----------------------------------------------------------------------

    def _append(self, record: tuple[Any, ...]) -> None:
        buffer = self._buffer
        size = len(buffer)
        if size < self.capacity:
            buffer.append(record)
            if size == self._wake_at:
                self._wake.set()
            return
        self._full(record)

    def _append_and_start(self, record: tuple[Any, ...]) -> None:
        with self._room:
            if self._thread is None and not self._shutdown:
                self._start_thread()
        self._append(record)

    def at_exit(self) -> None:
        """This process is ending, and its exit flush delivers what is buffered (on the
        flush's own thread): a record from now on starts no drain thread. A child that
        recorded nothing before its end (an unsampled one, or one whose only span is its
        own) started one for its last record alone: 0.1-0.5 ms in a freshly forked child."""
        if self._thread is None and not self._shutdown:
            self.append = self._append

    def _append_lost(self, record: tuple[Any, ...]) -> None:
        self._lose(1, "after_shutdown")

    def _full(self, record: tuple[Any, ...]) -> None:
        if (
            self.overflow == "drop"
            or self._shutdown
            or self._thread is None
            or threading.get_ident() == self._drain_ident
        ):
            self._lose(1, "buffer_full")
            return
        now = time.monotonic()
        deadline, give_up = now + self.wait_limit, now + PROGRESS_WAIT_CAP
        with self._room:
            self._wake.set()
            while len(self._buffer) >= self.capacity:
                left = min(deadline, give_up) - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    self._lose(1, "buffer_full")
                    return
                # Woken by the drain taking a batch: progress, so the no-progress limit
                # starts again (the cap still holds).
                deadline = time.monotonic() + self.wait_limit
        self._buffer.append(record)

    def _lose(self, count: int, reason: str) -> None:
        self.lost += count
        _count_lost(count, reason)

    # --- the drain ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._drain_ident = threading.get_ident()
        live = shared_state.settings()
        next_idle = time.monotonic() + IDLE_AFTER
        # (wall, the process's CPU, this thread's CPU) at the last quiet tick: the
        # program's share of a CPU since is the process's CPU less this thread's (a tick
        # that delivered is not looked at: the next quiet one is already IDLE_AFTER away).
        looked = (time.monotonic(), time.process_time(), time.thread_time())
        while True:
            sampled = live.sample_rate < 1.0 and not records_every_trace()
            self._wake.wait(SAMPLED_DRAIN_INTERVAL if sampled else DRAIN_INTERVAL)
            self._wake.clear()
            try:
                if self._drain():
                    next_idle = time.monotonic() + IDLE_AFTER
                elif self.idle is not None and not self._shutdown:
                    now, cpu, mine = time.monotonic(), time.process_time(), time.thread_time()
                    program = (cpu - looked[1] - (mine - looked[2])) / max(now - looked[0], 1e-3)
                    looked = (now, cpu, mine)
                    if now >= next_idle and program < IDLE_CPU_SHARE:
                        # Done: look again a while later. Not done: again next tick.
                        next_idle = now + IDLE_RECHECK if self.idle() else now
                inherited.release()  # (a fork child's copy of its parent's records)
            except Exception:  # noqa: BLE001 -- the drain thread must outlive one bad batch
                log_internal_error()
            if self._shutdown and not self._buffer:
                return

    def _drain(self, until: int | None = None) -> int:
        """Deliver records; all of them, or ``until`` at most. Returns how many."""
        delivered = 0
        with self._draining:
            buffer = self._buffer
            while buffer and (until is None or delivered < until):
                count = len(buffer) if until is None else min(len(buffer), until - delivered)
                count = min(count, self._batch_size)
                batch = [buffer.popleft() for _ in range(count)]
                self._in_hand = count
                with self._room:
                    self._room.notify_all()
                try:
                    self._deliver(batch)
                finally:
                    self._in_hand = 0
                delivered += count
            failures, self._failures = self._failures, []
        if failures:
            self._fire(failures)
        return delivered

    def _fire(self, failures: list[Any]) -> None:
        """The flight recorder's triggers for recorded spans that failed, made after the
        drain's lock is released: a dump's helper flushes this processor, which drains.
        On a caller's thread (a flush, an exit, a shutdown) the dump is waited for, up to
        ``FLIGHT_CALLER_WAIT`` s, so that it reaches the processors before they close."""
        wait = None if threading.get_ident() == self._drain_ident else FLIGHT_CALLER_WAIT
        for failure in failures:
            _flight_triggers.fire(failure, wait)

    def _deliver(self, batch: list[tuple[Any, ...]]) -> None:
        if self.sink is not None:
            self._deliver_to_sink(batch)
            return
        downstream = self.downstream
        for record in batch:
            try:
                span = record[R_KIND].materialise(record)
            except Exception as exc:  # noqa: BLE001 -- one bad record must not cost the batch
                self._lose(1, "materialise_error")
                self._internal_error(exc)
                continue
            for processor in downstream:
                try:
                    processor.on_start(span, None)
                    processor.on_end(span)
                except Exception as exc:  # noqa: BLE001 -- a processor's failure is its own
                    self._internal_error(exc)
            # A recorded span's error triggers the flight recorder (after the batch).
            if flight.append is not None and _failed(span):
                self._failures.append(_flight_triggers.span_failure(span))

    def _deliver_to_sink(self, batch: list[tuple[Any, ...]]) -> None:
        items = []
        for record in batch:
            try:
                kind = record[R_KIND]
                item = (kind.plain(record), kind.origin(record))
                items.append(item)
                if flight.append is not None and _plain_failed(item[0]):
                    self._failures.append(_flight_triggers.plain_failure(*item))
            except Exception as exc:  # noqa: BLE001 -- one bad record must not cost the batch
                self._lose(1, "materialise_error")
                self._internal_error(exc)
        try:
            self.sink(items)
        except Exception as exc:  # noqa: BLE001 -- (a sink counts its own failures)
            self._lose(len(items), "export_failed")
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        # Under the test suite the first error is raised by the next force_flush, on the
        # caller's thread: raised here it would end the drain thread and lose the rest.
        if raise_internal_errors():
            if self._failure is None:
                self._failure = exc
            return
        try:
            raise exc
        except Exception:  # noqa: BLE001
            log_internal_error()

    def deliver_pending(self) -> None:
        """Deliver every record appended before this call, on this thread, without
        flushing ``downstream`` (a shutdown, before the flight recorder stops: a failed
        recorded span still buffered is a trigger)."""
        if os.getpid() != self._pid:  # a fork child before its at-fork hook ran
            self._after_fork_in_child()
        self._drain(until=len(self._buffer))

    def pending(self) -> int:
        """Records appended and not yet delivered (the batch being delivered included)."""
        return len(self._buffer) + self._in_hand

    # --- the SpanProcessor interface -------------------------------------------------------

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for processor in self.downstream:
            processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:
        for processor in self.downstream:
            on_ending = getattr(processor, "_on_ending", None)
            if on_ending is not None:
                on_ending(span)

    def on_end(self, span: Any) -> None:
        for processor in self.downstream:
            processor.on_end(span)
        # The program's span (or procscope's, where spans are not records) on its own
        # thread: a flight recorder trigger when it failed (a global read and an identity
        # test while the recorder is on; span_failed never raises).
        if flight.append is not None:
            try:  # (the SDK's span and Status keep these: read directly, about 25 ns)
                failed = span._status._status_code is _ERROR
            except AttributeError:
                failed = _failed(span)
            if failed:
                _flight_triggers.span_failed(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver every record appended before this call, then flush ``downstream``."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        if os.getpid() != self._pid:  # a fork child before its at-fork hook ran
            self._after_fork_in_child()
        # Drained here, on the caller's thread, rather than waited for: the caller may be
        # an exit path that cannot wait for another thread (a signal handler, os._exit).
        self._drain(until=len(self._buffer))
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        flushed = True
        for processor in self.downstream:
            left = int(max(0.0, deadline - time.monotonic()) * 1000)
            flushed = processor.force_flush(left) and flushed
        return flushed

    def settle(self, timeout_millis: int = 30_000) -> bool:
        """Do the sink's deferred work (``idle``: the trace DB's span backlog) until none is
        left, on this thread, for ``timeout_millis`` at most; True when none is left."""
        if self.idle is None:
            return True
        deadline = time.monotonic() + timeout_millis / 1000
        while not self.idle():
            if time.monotonic() >= deadline:
                return False
            # (Not done: a step made, or the sink busy with a delivery. A millisecond
            # between steps, so that this loop never spins against that delivery.)
            time.sleep(0.001)
        return True

    def shutdown(self) -> None:
        """Deliver what is buffered, stop the drain thread, shut ``downstream`` down."""
        if self._shutdown:
            return
        self._shutdown = True
        self.append = self._append_lost
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=DEFAULT_WAIT_LIMIT)
        self._drain()
        # Dumps still being made (a failure just before the end) reach the processors
        # before they close.
        from . import _flight_spans

        _flight_spans.wait_for_dumps(FLIGHT_CALLER_WAIT)
        for processor in self.downstream:
            processor.shutdown()


def recorder_of(tracer_provider: Any) -> RecordingSpanProcessor | None:
    """The provider's recorder when records reach every processor it has, else None.

    A provider whose only span processor is a :class:`RecordingSpanProcessor` gets
    records; one where the program added processors of its own beside it (or that has
    no recorder) gets SDK spans made on the caller's thread, as every processor there
    expects.
    """
    active = getattr(tracer_provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    if processors is None or len(processors) != 1:
        return None
    only = processors[0]
    return only if isinstance(only, RecordingSpanProcessor) else None
