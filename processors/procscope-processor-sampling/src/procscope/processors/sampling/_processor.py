"""TailSamplingProcessor: buffer each trace, decide by policy when it is complete, pass on.

Concurrency: one lock guards the buffers, the decision memory and the counters. Every
call out of this module (policies, the wrapped processor, the decision callback) happens
after the lock is released: a trace being decided is first moved into the decision memory
(as itself, until its verdict replaces it), where a span that ends meanwhile is put aside
as late and handled with the trace's decision.

Cost: every span passes through on_start and on_end, so those are kept to a few dict and
list operations on the SDK's own fields (read directly, with a fallback to the public
properties for other span types); a new trace without a parent is added without the lock
(see on_start), and a decision takes the lock once more. docs/performance.md has figures.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from procscope.core import inherited
from procscope.core.guard import log_internal_error
from procscope.core.shared_state import settings as live_settings
from procscope.core.threadinfo import registered_thread

from ._annotate import with_probability
from ._policies import AbnormalEndPolicy, AnyOf, ErrorPolicy, Policy, TraceData, default_policy

__all__ = ["Decision", "SamplingStats", "TailSamplingProcessor"]

_logger = logging.getLogger("procscope")

# Why a trace was decided.
COMPLETE = "complete"  # its local root and every span started in it had ended
TIMEOUT = "timeout"  # the decision wait passed first
EARLY = "early"  # memory limits: the oldest traces, or one trace over its own limit
FLUSH = "flush"  # force_flush() or shutdown()

_COUNTER_OF_REASON = {
    COMPLETE: "decided_complete",
    TIMEOUT: "decided_on_timeout",
    EARLY: "decided_early",
    FLUSH: "decided_at_flush",
}


def _context_getters() -> tuple[Callable[[Any], tuple[int, int]], Callable[[Any], bool]]:
    """``(trace_id, trace_flags)`` and ``is_remote`` getters for a SpanContext.

    SpanContext is a tuple ``(trace_id, span_id, is_remote, trace_flags, ...)`` whose
    properties each cost a Python call; itemgetter reads the tuple at C speed. The layout
    is checked once, here: should it ever change, the properties are used instead.
    """
    probe = SpanContext(3, 5, True, TraceFlags(1))
    if isinstance(probe, tuple) and probe[0] == 3 and probe[2] is True and probe[3] == 1:
        return operator.itemgetter(0, 3), operator.itemgetter(2)
    return operator.attrgetter("trace_id", "trace_flags"), operator.attrgetter("is_remote")


_ids_and_flags, _is_remote = _context_getters()

_DROPPED = -1.0  # the decision memory's value for a dropped trace (kept: its probability)
_MIN_SLEEP = 0.005
_NOTHING: list[_Trace] = []  # on_end's marker: the one trace it closed is complete
_START_WORKER: list[_Trace] = []  # on_end's marker: a span is buffered, and no worker runs
_monotonic = time.monotonic


@dataclass(frozen=True)
class Decision:
    """What the processor decided about one trace (passed to ``on_decision``)."""

    trace_id: int
    kept: bool
    # Keep probability on the kept spans (NaN when unknown); None when dropped.
    probability: float | None
    reason: str
    span_count: int


@dataclass(frozen=True)
class SamplingStats:
    """Counters since the processor was made (or since a fork, in the child)."""

    kept_traces: int
    dropped_traces: int
    kept_spans: int
    dropped_spans: int
    decided_complete: int
    decided_on_timeout: int
    decided_early: int
    decided_at_flush: int
    late_spans: int
    late_kept_spans: int
    upgraded_traces: int
    policy_errors: int
    ignored_after_shutdown: int  # spans that ended after shutdown(): nowhere left to go
    buffered_traces: int
    buffered_spans: int


class _Trace(TraceData):
    """A trace being buffered; also what the policies are shown (no view made per decision)."""

    __slots__ = ("late", "root_ended", "started")
    spans: list[ReadableSpan]

    def __init__(self, trace_id: int, first_seen: float, started: list[None]) -> None:
        # TraceData's fields, set here rather than through its __init__: one call less
        # per trace, on the program's thread.
        self.trace_id = trace_id
        self.spans = []  # ended, buffered
        self.first_seen = first_seen
        self._randomness = -1  # with _head_threshold, read from the trace state when needed
        # ``complete`` is set when the trace is decided, before any policy sees it.
        self.started = started  # one entry per on_start (appended without the lock)
        self.late: list[ReadableSpan] | None = None  # ended while the trace was being decided
        self.root_ended = False



def _oldest(traces: dict[int, Any], count: int | None = None) -> tuple[Any, ...]:
    """Up to ``count`` buffered traces, oldest first (all of them when None).

    Read in one C step, which an unlocked insert (on_start's new roots) cannot interleave
    with, but for one case: a garbage collection during the read that runs a finalizer,
    whose Python code lets another thread run. That thread's insert makes the read fail
    ("dictionary changed size during iteration"), seen once under load: read again."""
    while True:
        try:
            return tuple(traces.values() if count is None else islice(traces.values(), count))
        except RuntimeError:
            continue

class TailSamplingProcessor(SpanProcessor):
    """Tail sampling inside the program: hold each trace's spans, decide, pass the kept on.

    ``next`` is the span processor (or the span exporter, put behind a
    ``BatchSpanProcessor``) that receives the kept spans. ``policy`` decides (default:
    :func:`default_policy` at procscope's live ``sample_rate``). A trace is decided when
    its local root and every span started in it have ended, when ``decision_wait_seconds``
    have passed since its first span, or early, under memory limits: more than
    ``max_buffered_spans`` spans or ``max_buffered_traces`` traces (the oldest are decided
    first), or more than ``max_spans_per_trace`` in one trace (that trace). Nothing is
    dropped without a decision. Spans that end after their trace's decision follow it;
    a late span that ``late_span_policy`` matches (default: an error or abnormal end)
    turns a dropped trace into a kept one for the rest of its spans.
    """

    def __init__(
        self,
        next: SpanProcessor | SpanExporter,
        policy: Policy | Callable[[TraceData], bool] | None = None,
        *,
        decision_wait_seconds: float = 5.0,
        max_buffered_spans: int = 20_000,
        max_buffered_traces: int = 5_000,
        max_spans_per_trace: int | None = None,
        max_remembered_decisions: int = 50_000,
        late_span_policy: Policy | None = None,
        shutdown_timeout_millis: float = 10_000,
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        if isinstance(next, SpanExporter):
            next = BatchSpanProcessor(next)
        if not isinstance(next, SpanProcessor):
            raise TypeError("next must be a SpanProcessor or a SpanExporter")
        if not decision_wait_seconds > 0:
            raise ValueError("decision_wait_seconds must be positive")
        if max_buffered_spans < 1 or max_buffered_traces < 1:
            raise ValueError("buffer limits must be at least 1")
        self._next = next
        # Calling on_start downstream costs a call per span: only when it does something.
        self._forward_start = type(next).on_start is not SpanProcessor.on_start
        if policy is None:
            # The live settings object is one per process and never replaced: read its
            # attribute at each decision, so procscope.configure(sample_rate=) applies.
            live = live_settings()
            policy = default_policy(lambda: live.sample_rate)
        self._policy: Policy = policy if isinstance(policy, Policy) else AnyOf(policy)
        self._late_policy: Policy = late_span_policy or AnyOf(ErrorPolicy(), AbnormalEndPolicy())
        self._wait = float(decision_wait_seconds)
        self._max_spans = int(max_buffered_spans)
        self._max_traces = int(max_buffered_traces)
        self._max_per_trace = int(max_spans_per_trace or max(1, self._max_spans // 4))
        self._max_decisions = max(1, int(max_remembered_decisions))
        self._shutdown_timeout = float(shutdown_timeout_millis) / 1000.0
        self._on_decision = on_decision
        self._shutdown = False
        self._init_state()
        if hasattr(os, "register_at_fork"):
            # A weak reference, as in the SDK's BatchProcessor: the hook outlives us.
            weak_reinit = weakref.WeakMethod(self._at_fork_reinit)

            def _after_in_child() -> None:
                reinit = weak_reinit()
                if reinit is not None:
                    reinit()

            os.register_at_fork(after_in_child=_after_in_child)

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._traces: dict[int, _Trace] = {}  # insertion order is first-seen order
        # The decision memory: a trace's verdict (its probability, or _DROPPED), or the
        # _Trace itself while it is being decided (a span ending then is put aside as late).
        self._decisions: dict[int, float | _Trace] = {}
        self._decision_order: deque[int] = deque()  # its keys, oldest first
        self._buffered = 0
        self._worker: threading.Thread | None = None
        self._wake = threading.Event()
        self._counts = dict.fromkeys(
            (
                "kept_traces",
                "dropped_traces",
                "kept_spans",
                "dropped_spans",
                "decided_complete",
                "decided_on_timeout",
                "decided_early",
                "decided_at_flush",
                "late_spans",
                "late_kept_spans",
                "upgraded_traces",
                "policy_errors",
                "ignored_after_shutdown",
            ),
            0,
        )

    def _at_fork_reinit(self) -> None:
        # The child starts empty: the parent still holds, and decides, what it buffered.
        # The lock may have been held by a thread that does not exist here, so it is new;
        # the worker thread did not survive the fork and starts again when needed.
        # Once per child: _reinit_if_forked may have done it already.
        if self._pid != os.getpid():
            self._init_child_state()

    def _reinit_if_forked(self) -> None:
        """Called where the lock is found taken: in a fork child, it may be the copy of a
        lock another thread of the parent held at the fork, which nobody here will ever
        release. Fork safety must not depend on the order of the at-fork hooks (another
        hook, run before ours, can end a span in the child), so each lock-taking path
        checks, at the cost of a ``locked()`` call, and of a getpid only when taken."""
        if self._pid != os.getpid():
            self._init_child_state()

    def _init_child_state(self) -> None:
        # The parent's buffered traces and decisions are kept aside to be freed a little at
        # a time, not all at the fork (procscope.core.inherited: freeing them made the
        # child's start wait).
        for container in (self._traces, self._decisions, self._decision_order):
            inherited.keep(container)
        self._init_state()

    # -- the span hooks (the program's threads) ------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            try:  # the SDK's field: each property read is a Python call
                context = span._context
            except AttributeError:
                context = span.context
            if context is None:
                return
            trace_id, flags = _ids_and_flags(context)
            if not flags & 1:
                return
            if self._forward_start:
                self._next.on_start(span, parent_context)
            # Hot path without our lock: list.append is atomic. If the trace is being
            # closed at this very moment, this start lands on the closed buffer and the
            # span's end is handled as late, which is what it is.
            traces = self._traces
            trace = traces.get(trace_id)
            if trace is not None:
                trace.started.append(None)
                return
            try:
                parent = span._parent
            except AttributeError:
                parent = span.parent
            if parent is None and not self._shutdown:
                # A root without a parent: the SDK has just made this trace id, so no other
                # thread can be buffering, closing or remembering it, and no lock is needed
                # to add its buffer (a dict store is atomic). The lock is taken only when
                # the buffer is over its limit or the worker is not running yet.
                traces[trace_id] = _Trace(trace_id, _monotonic(), [None])
                if len(traces) > self._max_traces:
                    self._after_new_trace()
                return
            self._start_trace(trace_id)
        except Exception:  # noqa: BLE001 -- the host program must never see our errors
            log_internal_error()

    def _after_new_trace(self) -> None:
        evicted: list[_Trace] | None = None
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if len(self._traces) > self._max_traces:
                evicted = self._evict_oldest_locked()
        if evicted:
            self._decide(evicted, EARLY)

    def _start_trace(self, trace_id: int) -> None:
        evicted: list[_Trace] | None = None
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if self._shutdown:
                return
            trace = self._traces.get(trace_id)
            if trace is not None:
                trace.started.append(None)
                return
            if trace_id in self._decisions:
                return  # a late span: its end follows the decision
            trace = _Trace(trace_id, _monotonic(), [None])
            self._traces[trace_id] = trace
            if len(self._traces) > self._max_traces:
                evicted = self._evict_oldest_locked()
        if evicted:
            self._decide(evicted, EARLY)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            try:
                context = span._context
            except AttributeError:
                context = span.context
            if context is None:
                return
            trace_id, flags = _ids_and_flags(context)
            if not flags & 1:
                return
            ready: list[_Trace]
            if self._lock.locked():  # see _reinit_if_forked
                self._reinit_if_forked()
            lock = self._lock
            # acquire/release rather than ``with``: half the cost, on every span; nothing
            # between them can raise but MemoryError, and the finally releases even then.
            lock.acquire()
            try:
                trace = self._traces.get(trace_id)
                if trace is not None:
                    spans = trace.spans
                    spans.append(span)
                    buffered = self._buffered = self._buffered + 1
                    count = len(spans)
                    # Every span this trace started here has ended. Its local root was
                    # started first and, open, kept this false: so it has ended too.
                    if count >= len(trace.started):
                        # _close_locked and _remember_locked inline: once per trace, hot.
                        del self._traces[trace_id]
                        self._buffered = buffered - count
                        decisions = self._decisions
                        if trace_id not in decisions:
                            order = self._decision_order
                            order.append(trace_id)
                            if len(order) > self._max_decisions:
                                decisions.pop(order.popleft(), None)
                        decisions[trace_id] = trace  # being decided
                        ready, reason = _NOTHING, COMPLETE
                    elif count >= self._max_per_trace:
                        ready, reason = [self._close_locked(trace)], EARLY
                    elif buffered > self._max_spans:
                        ready, reason = self._evict_oldest_locked(), EARLY
                    elif self._worker is None and not self._shutdown:
                        ready, reason = _START_WORKER, TIMEOUT
                    else:
                        return
            finally:
                lock.release()
            if trace is None:
                try:
                    parent = span._parent
                except AttributeError:
                    parent = span.parent
                self._end_unbuffered(span, trace_id, parent is None or _is_remote(parent))
            elif ready is _NOTHING:
                self._decide_one(trace, COMPLETE)
            elif ready is _START_WORKER:
                self._start_worker()
            else:
                self._decide(ready, reason)
        except Exception:  # noqa: BLE001 -- the host program must never see our errors
            log_internal_error()

    def _end_unbuffered(self, span: ReadableSpan, trace_id: int, is_root: bool) -> None:
        """A span whose trace has no buffer: late for a decided trace, else a new buffer."""
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if self._shutdown:
                self._counts["ignored_after_shutdown"] += 1
                return
            trace = self._traces.get(trace_id)
            verdict: float | None = None
            if trace is None:
                known = self._decisions.get(trace_id)
                if isinstance(known, _Trace):  # being decided: handled with its decision
                    if known.late is None:
                        known.late = []
                    known.late.append(span)
                    self._counts["late_spans"] += 1
                    return
                if known is not None:
                    verdict = known
                    self._counts["late_spans"] += 1
                else:
                    # Started before we were added, or its decision was forgotten long
                    # ago: it gets a buffer and a decision of its own.
                    trace = _Trace(trace_id, _monotonic(), [])
                    self._traces[trace_id] = trace
            ready: list[_Trace] = []
            reason = COMPLETE
            if trace is not None:
                trace.spans.append(span)
                self._buffered += 1
                if is_root:
                    trace.root_ended = True
                if trace.root_ended and len(trace.spans) >= len(trace.started):
                    ready = [self._close_locked(trace)]
                elif self._buffered > self._max_spans or len(self._traces) > self._max_traces:
                    ready, reason = self._evict_oldest_locked(), EARLY
        if trace is None:
            self._late_span(trace_id, span, _DROPPED if verdict is None else verdict)
        elif ready:
            self._decide(ready, reason)
        elif self._worker is None:
            self._start_worker()

    # -- buffers (call with the lock held) -----------------------------------------------

    def _close_locked(self, trace: _Trace) -> _Trace:
        del self._traces[trace.trace_id]
        self._buffered -= len(trace.spans)
        self._remember_locked(trace.trace_id, trace)  # pending until _finish
        return trace

    def _evict_oldest_locked(self) -> list[_Trace]:
        # Down to 90% of the limits, so that a full buffer does not decide one trace per span.
        span_goal = self._max_spans - self._max_spans // 10
        trace_goal = self._max_traces - self._max_traces // 10
        evicted: list[_Trace] = []
        traces = self._traces
        while traces and (self._buffered > span_goal or len(traces) > trace_goal):
            # Oldest first, a chunk at a time (see _oldest).
            for oldest in _oldest(traces, 64):
                if self._buffered <= span_goal and len(traces) <= trace_goal:
                    break
                evicted.append(self._close_locked(oldest))
        return evicted

    def _remember_locked(self, trace_id: int, verdict: float | _Trace) -> None:
        decisions = self._decisions
        if trace_id not in decisions:
            # Forget the oldest through a queue of ids: taking a dict's first key again and
            # again walks over the slots its earlier deletions left (quadratic over time).
            order = self._decision_order
            order.append(trace_id)
            if len(order) > self._max_decisions:
                decisions.pop(order.popleft(), None)
        decisions[trace_id] = verdict

    # -- deciding (never under the lock) -------------------------------------------------

    def _decide(self, traces: Iterable[_Trace], reason: str) -> None:
        for trace in traces:
            self._decide_one(trace, reason)

    def _decide_one(self, trace: _Trace, reason: str) -> None:
        trace.complete = reason == COMPLETE
        try:
            result = self._policy.evaluate(trace)
        except Exception:  # noqa: BLE001 -- the host program must never see our errors
            # Lose nothing: a policy that fails keeps the trace (and is reported once).
            if self._lock.locked():  # see _reinit_if_forked
                self._reinit_if_forked()
            with self._lock:
                self._counts["policy_errors"] += 1
            result = 1.0
            log_internal_error()
        if result is not None and not math.isnan(result):
            result = min(result, trace.head_probability)
        self._finish(trace, result, reason)

    def _finish(self, trace: _Trace, probability: float | None, reason: str) -> None:
        trace_id = trace.trace_id
        kept = probability is not None
        counts = self._counts
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        lock = self._lock
        lock.acquire()  # as in on_end: half the cost of ``with``, once per trace
        try:
            decisions = self._decisions
            if trace_id in decisions:  # else forgotten already (a tiny decision memory)
                decisions[trace_id] = _DROPPED if probability is None else probability
            late = trace.late
            spans = trace.spans + late if late else trace.spans
            counts[_COUNTER_OF_REASON[reason]] += 1
            if kept:
                counts["kept_traces"] += 1
                counts["kept_spans"] += len(spans)
                if late:
                    counts["late_kept_spans"] += len(late)
            else:
                counts["dropped_traces"] += 1
                counts["dropped_spans"] += len(spans)
        finally:
            lock.release()
        if probability is not None:
            self._forward(spans, probability)
        elif late:
            # A late span with an error can still rescue the rest of the trace.
            for span in late:
                self._late_span(trace.trace_id, span, _DROPPED, counted=True)
        if self._on_decision is not None:
            try:  # the Decision is made only for a callback that wants it
                self._on_decision(
                    Decision(trace.trace_id, kept, probability, reason, len(trace.spans))
                )
            except Exception:  # noqa: BLE001 -- the host program must never see our errors
                log_internal_error()

    def _late_span(
        self, trace_id: int, span: ReadableSpan, verdict: float, counted: bool = False
    ) -> None:
        """A span of an already decided trace: follow the decision, or rescue the trace."""
        if verdict != _DROPPED and (verdict >= 1.0 or math.isnan(verdict)):
            if self._lock.locked():  # see _reinit_if_forked
                self._reinit_if_forked()
            with self._lock:
                self._counts["kept_spans"] += 1
                self._counts["late_kept_spans"] += 1
            self._forward([span], verdict)
            return
        try:
            upgrade = self._late_policy.evaluate(TraceData(trace_id, [span])) is not None
        except Exception:  # noqa: BLE001 -- the host program must never see our errors
            upgrade = False
            log_internal_error()
        if verdict != _DROPPED and not upgrade:
            # Kept by chance: the late span follows the trace's probability.
            if self._lock.locked():  # see _reinit_if_forked
                self._reinit_if_forked()
            with self._lock:
                self._counts["kept_spans"] += 1
                self._counts["late_kept_spans"] += 1
            self._forward([span], verdict)
            return
        # A late error or abnormal end is kept whatever the rate: probability 1, also in a
        # trace that an earlier, probabilistic decision happened to keep.
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if upgrade:
                if self._decisions.get(trace_id) == _DROPPED:
                    self._counts["upgraded_traces"] += 1
                self._remember_locked(trace_id, 1.0)
                self._counts["kept_spans"] += 1
                self._counts["late_kept_spans"] += 1
                if counted:
                    self._counts["dropped_spans"] -= 1
            elif not counted:
                self._counts["dropped_spans"] += 1
        if upgrade:
            self._forward([span], 1.0)

    def _forward(self, spans: list[ReadableSpan], probability: float) -> None:
        on_end = self._next.on_end
        states: dict[int, object] = {}  # one rewritten trace state per distinct original
        for span in spans:
            on_end(with_probability(span, probability, states))

    # -- the decision-wait thread --------------------------------------------------------

    def start_worker(self) -> None:
        """Start the decision-wait thread now, if none runs (procscope's setup does).

        A program's thread count then does not change inside its own code: CPython's
        suites count threads around each test. A fork child does not inherit the thread
        and starts its own lazily, as below, so a plain child gets none."""
        self._start_worker()

    def _start_worker(self) -> None:
        """Start the decision-wait thread, when a span is buffered and none runs.

        Not when a trace starts: a fork child whose spans are all still open (its own
        process span) has nothing to decide, and gets no thread the plain child would not
        have. Started outside the lock: the new thread's start may itself be traced."""
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if self._worker is not None or self._shutdown:
                return
            worker = self._worker = threading.Thread(
                target=self._run_worker, name="procscope-tail-sampling", daemon=True
            )
        try:
            worker.start()
        except RuntimeError:  # interpreter shutdown: flush and shutdown decide instead
            pass

    def _run_worker(self) -> None:
        wake = self._wake
        while True:
            expired: list[_Trace] = []
            with self._lock:
                if self._shutdown or self._worker is not registered_thread():
                    return
                now = time.monotonic()
                sleep_for = self._wait
                while self._traces:
                    chunk = _oldest(self._traces, 64)  # (oldest first)
                    for trace in chunk:
                        due = trace.first_seen + self._wait
                        if due > now:
                            sleep_for = due - now
                            break
                        expired.append(self._close_locked(trace))
                    else:
                        continue
                    break
            if expired:
                try:
                    self._decide(expired, TIMEOUT)
                except Exception:  # noqa: BLE001 -- the host program must never see our errors
                    log_internal_error()
            wake.wait(max(_MIN_SLEEP, sleep_for))

    # -- flushing and shutting down ------------------------------------------------------

    def _take_all_locked(self) -> list[_Trace]:
        return [self._close_locked(trace) for trace in _oldest(self._traces)]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Decide every buffered trace now, then flush the next processor."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if self._shutdown:
                return False
            pending = self._take_all_locked()
        self._decide(pending, FLUSH)
        remaining = max(0, int((deadline - time.monotonic()) * 1000))
        return bool(self._next.force_flush(remaining))

    def shutdown(self) -> None:
        """Decide every buffered trace (within the shutdown budget), stop, shut the next down."""
        deadline = time.monotonic() + self._shutdown_timeout
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            pending = self._take_all_locked()
            worker, self._worker = self._worker, None
        self._wake.set()
        for index, trace in enumerate(pending):
            if time.monotonic() > deadline:
                # Out of time: what is left is dropped, but counted and said, not silent.
                rest = pending[index:]
                for late in rest:
                    self._finish(late, None, FLUSH)
                _logger.warning(
                    "procscope: tail sampling ran out of its shutdown budget; "
                    "%d traces were dropped undecided",
                    len(rest),
                )
                break
            self._decide([trace], FLUSH)
        if worker is not None and worker is not registered_thread():
            worker.join(max(0.0, deadline - time.monotonic()))
        self._next.shutdown()

    # -- reading --------------------------------------------------------------------------

    def stats(self) -> SamplingStats:
        """A snapshot of the counters."""
        if self._lock.locked():  # see _reinit_if_forked
            self._reinit_if_forked()
        with self._lock:
            return SamplingStats(
                buffered_traces=len(self._traces),
                buffered_spans=self._buffered,
                **self._counts,
            )

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def next_processor(self) -> SpanProcessor:
        return self._next

    def __repr__(self) -> str:
        return f"TailSamplingProcessor({self._next!r}, policy={self._policy!r})"
