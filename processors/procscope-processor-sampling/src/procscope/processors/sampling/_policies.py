"""Sampling policies: what the tail processor asks about each buffered trace.

A policy's :meth:`Policy.evaluate` returns ``None`` when the trace does not match, or
the probability with which traces like this one are kept when it does: ``1.0`` for a
deterministic rule (every trace with an error is kept), the rate for the probabilistic
policy, and :data:`UNKNOWN_PROBABILITY` (NaN) where nobody can know it (a rate limit).
The processor puts that probability on every kept span, so that counts can be
re-weighted (see docs/sampling.md).
"""

from __future__ import annotations

import math
import operator
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, StatusCode, TraceFlags, TraceState

from procscope.core.forksafe import held_in_forked_child
from procscope.core.head_sampling import (
    OT_KEY,
    RANDOMNESS_MASK,
    parse_ot,
    probability_of,
    threshold_for,
)

__all__ = [
    "UNKNOWN_PROBABILITY",
    "AbnormalEndPolicy",
    "AllOf",
    "AnyOf",
    "AttributePolicy",
    "DefaultPolicy",
    "ErrorPolicy",
    "FirstMatch",
    "LatencyPolicy",
    "Policy",
    "PredicatePolicy",
    "ProbabilisticPolicy",
    "RateLimitPolicy",
    "SpanCountPolicy",
    "TraceData",
    "default_policy",
]

UNKNOWN_PROBABILITY = math.nan

DEFAULT_EXIT_CODE_ATTRIBUTE = "process.exit.code"
DEFAULT_SIGNAL_ATTRIBUTE = "procscope.process.exit.signal"
# A signal explained by this reason is an expected end (a pool worker that its own pool
# terminated), not an abnormal one: docs/semantic-conventions.md, lifecycle section.
EXIT_REASON_ATTRIBUTE = "procscope.process.exit.reason"
EXPECTED_EXIT_REASONS = frozenset({"terminated_by_pool"})
DEFAULT_LATENCY_THRESHOLD_SECONDS = 1.0


def _trace_state_getter() -> Callable[[Any], Any]:
    """A SpanContext's trace state: its tuple item at C speed (the property is a call).

    The tuple layout is checked once, here; should it change, the property is used.
    """
    state = TraceState([("k", "v")])
    probe = SpanContext(3, 5, False, TraceFlags(1), state)
    if isinstance(probe, tuple) and len(probe) > 4 and probe[4] is state:
        return operator.itemgetter(4)
    return operator.attrgetter("trace_state")


_trace_state_of = _trace_state_getter()


class TraceData:
    """One trace's spans as the processor buffered them, for the policies to judge."""

    __slots__ = ("_head_threshold", "_randomness", "complete", "first_seen", "spans", "trace_id")

    def __init__(
        self,
        trace_id: int,
        spans: Sequence[ReadableSpan],
        complete: bool = True,
        first_seen: float | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.spans = spans
        # True when the local root and every span started in the trace had ended.
        self.complete = complete
        self.first_seen = time.monotonic() if first_seen is None else first_seen
        self._randomness = -1  # -1: the trace state is not read yet (_head_threshold neither)

    def _read_trace_state(self) -> None:
        """Randomness and head threshold, from one read of the trace state."""
        ot = None
        for span in self.spans:
            try:
                context = span._context
            except AttributeError:
                context = span.context
            if context is not None:
                trace_state = _trace_state_of(context)
                if trace_state is not None:
                    # TraceState.get is the generic Mapping one: for a missing key (the
                    # usual case) it raises and catches a KeyError, a microsecond per
                    # trace. The dict inside answers at C speed.
                    members: Any
                    try:
                        members = trace_state._dict
                    except AttributeError:
                        members = trace_state
                    ot = members.get(OT_KEY) if members else None
                break
        if ot:
            threshold, randomness = parse_ot(ot)
            self._head_threshold = threshold if threshold > 0 else 0
            self._randomness = randomness if randomness >= 0 else self.trace_id & RANDOMNESS_MASK
        else:
            self._head_threshold = 0
            self._randomness = self.trace_id & RANDOMNESS_MASK

    @property
    def randomness(self) -> int:
        """The trace's 56-bit randomness: ``rv`` from its trace state, else its id's low bits."""
        if self._randomness < 0:
            self._read_trace_state()
        return self._randomness

    @property
    def head_probability(self) -> float:
        """The probability the head sampler kept this trace with (``th``; 1.0 when none)."""
        if self._randomness < 0:
            self._read_trace_state()
        return probability_of(self._head_threshold)

    @property
    def duration_seconds(self) -> float:
        """From the earliest start to the latest end among the buffered spans."""
        first = last = None
        for span in self.spans:
            try:
                start, end = span._start_time, span._end_time
            except AttributeError:
                start, end = span.start_time, span.end_time
            if start is not None and (first is None or start < first):
                first = start
            if end is not None and (last is None or end > last):
                last = end
        if first is None or last is None:
            return 0.0
        return max(0, last - first) / 1e9


class Policy:
    """Decides about one trace: ``None`` to not match, else the keep probability."""

    # True for policies whose answer uses something up (a rate limit's tokens): the
    # composites ask them last, and only when nothing else kept the trace already.
    stateful = False

    def evaluate(self, trace: TraceData) -> float | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# Policies run once per trace over every span: they read the ReadableSpan's fields
# directly where it has them (``_status``, ``_events``, ``_attributes``...), which skips
# the copies its public properties make (``events`` builds a tuple on each read), and fall
# back to the public properties for any other span type.


def _status_code(span: ReadableSpan) -> StatusCode:
    try:
        return span._status._status_code  # Status.status_code is a property: a call
    except AttributeError:
        return span.status.status_code


def _events(span: ReadableSpan) -> Any:
    try:
        return span._events
    except AttributeError:
        return span.events


def _attributes(span: ReadableSpan) -> Any:
    """The span's attributes as a plain mapping, cheap to test with ``in``.

    ``BoundedAttributes`` answers ``in`` through Python-level ``__getitem__`` and a
    KeyError for every miss; its inner dict answers at C speed.
    """
    try:
        attributes: Any = span._attributes
    except AttributeError:
        return span.attributes
    try:
        return attributes._dict
    except AttributeError:
        return attributes


def _has_error(span: ReadableSpan) -> bool:
    if _status_code(span) is StatusCode.ERROR:
        return True
    events = _events(span)
    return bool(events) and any(event.name == "exception" for event in events)


class ErrorPolicy(Policy):
    """Keeps traces with a span whose status is ERROR or that recorded an exception."""

    def evaluate(self, trace: TraceData) -> float | None:
        error = StatusCode.ERROR
        for span in trace.spans:
            try:
                if span._status._status_code is error:
                    return 1.0
                events = span._events
            except AttributeError:
                if _has_error(span):
                    return 1.0
                continue
            if events and any(event.name == "exception" for event in events):
                return 1.0
        return None


class AbnormalEndPolicy(Policy):
    """Keeps traces in which a process ended abnormally: by a signal, or a non-zero exit code.

    The lifecycle instrumentor marks a process span that ended by crash or signal with
    status ERROR, ``process.exit.code`` and ``procscope.process.exit.signal``; the names
    are arguments so that other instrumentations can be matched too. A span with status
    ERROR that carries either attribute matches, and so does a span with a signal or a
    non-zero exit code whatever its status, unless ``procscope.process.exit.reason`` says
    the end was expected (``terminated_by_pool``) and the status is not ERROR.
    """

    def __init__(
        self,
        exit_code_attribute: str = DEFAULT_EXIT_CODE_ATTRIBUTE,
        signal_attribute: str = DEFAULT_SIGNAL_ATTRIBUTE,
    ) -> None:
        self.exit_code_attribute = exit_code_attribute
        self.signal_attribute = signal_attribute

    def _abnormal(self, span: ReadableSpan, attributes: Any) -> bool:
        if attributes.get(self.signal_attribute) is not None:
            if attributes.get(EXIT_REASON_ATTRIBUTE) in EXPECTED_EXIT_REASONS:
                return _status_code(span) is StatusCode.ERROR
            return True
        code = attributes.get(self.exit_code_attribute)
        if code is None:
            return False
        return code != 0 or _status_code(span) is StatusCode.ERROR

    def evaluate(self, trace: TraceData) -> float | None:
        signal_key, code_key = self.signal_attribute, self.exit_code_attribute
        for span in trace.spans:
            attributes = _attributes(span)
            if not attributes:
                continue
            # Most spans have neither attribute: two membership tests and on.
            if (signal_key in attributes or code_key in attributes) and self._abnormal(
                span, attributes
            ):
                return 1.0
        return None

    def __repr__(self) -> str:
        return f"AbnormalEndPolicy({self.exit_code_attribute!r}, {self.signal_attribute!r})"


class LatencyPolicy(Policy):
    """Keeps traces that lasted at least ``threshold_seconds`` (earliest start to latest end)."""

    def __init__(self, threshold_seconds: float = DEFAULT_LATENCY_THRESHOLD_SECONDS) -> None:
        if not threshold_seconds >= 0:
            raise ValueError("threshold_seconds must be 0 or more")
        self.threshold_seconds = float(threshold_seconds)

    def evaluate(self, trace: TraceData) -> float | None:
        return 1.0 if trace.duration_seconds >= self.threshold_seconds else None

    def __repr__(self) -> str:
        return f"LatencyPolicy({self.threshold_seconds})"


class ProbabilisticPolicy(Policy):
    """Keeps a share of traces, consistently: the same trace id gets the same answer everywhere.

    It compares the trace's randomness (``rv`` in its trace state, else the low 56 bits
    of its id) with the threshold of ``rate`` (OpenTelemetry's consistent probability
    sampling), so every process keeps or drops a multi-process trace whole. ``rate`` is
    a number or a function returning one, read at each decision (procscope passes the
    live ``sample_rate``, so ``procscope.configure`` changes it at once).
    """

    def __init__(self, rate: float | Callable[[], float]) -> None:
        self._last = (-1.0, 0)  # (rate, its threshold): rates change rarely
        if callable(rate):
            self._rate_of: Callable[[], float] = rate
        else:
            value = float(rate)
            if not 0.0 <= value <= 1.0:
                raise ValueError("rate must be from 0.0 to 1.0")
            self._rate_of = lambda: value

    @property
    def rate(self) -> float:
        return min(1.0, max(0.0, float(self._rate_of())))

    def evaluate(self, trace: TraceData) -> float | None:
        rate = self._rate_of()
        last = self._last
        if last[0] == rate:
            threshold = last[1]
        else:
            threshold = threshold_for(min(1.0, max(0.0, float(rate))))
            self._last = (rate, threshold)
        if trace.randomness >= threshold:
            return probability_of(threshold)
        return None

    def __repr__(self) -> str:
        return f"ProbabilisticPolicy({self.rate})"


class RateLimitPolicy(Policy):
    """Keeps at most ``traces_per_second`` traces (a token bucket holding ``burst`` tokens).

    Not consistent across processes (each process has its own bucket) and the probability
    of a trace it keeps is unknown, so its spans carry none.
    """

    stateful = True

    def __init__(self, traces_per_second: float, burst: float | None = None) -> None:
        if not traces_per_second > 0:
            raise ValueError("traces_per_second must be positive")
        self.traces_per_second = float(traces_per_second)
        self.burst = float(burst) if burst is not None else max(1.0, self.traces_per_second)
        self._tokens = self.burst
        self._last = time.monotonic()
        # Decisions run on whichever thread completes a trace: the bucket needs its own lock.
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def evaluate(self, trace: TraceData) -> float | None:
        if held_in_forked_child(self._lock, self._pid):
            # A fork's copy of the lock, held by a parent's thread that is not here: a
            # trace completed in a fork child (even inside an at-fork hook run before any
            # of ours) would wait for ever. The child's bucket gets a lock of its own.
            self._lock = threading.Lock()
            self._pid = os.getpid()
        with self._lock:
            now = time.monotonic()
            self._tokens = min(
                self.burst, self._tokens + (now - self._last) * self.traces_per_second
            )
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return UNKNOWN_PROBABILITY
        return None

    def __repr__(self) -> str:
        return f"RateLimitPolicy({self.traces_per_second}, burst={self.burst})"


class AttributePolicy(Policy):
    """Keeps traces with a span whose attribute ``key`` is among ``values``.

    With neither ``values`` nor ``predicate``, having the attribute at all matches;
    ``predicate(value)`` decides otherwise.
    """

    def __init__(
        self,
        key: str,
        values: Collection[Any] | None = None,
        predicate: Callable[[Any], bool] | None = None,
    ) -> None:
        self.key = key
        self.values = None if values is None else frozenset(values)
        self.predicate = predicate

    def _matches(self, value: Any) -> bool:
        if self.predicate is not None:
            return bool(self.predicate(value))
        if self.values is None:
            return True
        try:
            return value in self.values
        except TypeError:  # an unhashable value (a sequence attribute)
            return False

    def evaluate(self, trace: TraceData) -> float | None:
        key = self.key
        for span in trace.spans:
            attributes = _attributes(span)
            if attributes and key in attributes and self._matches(attributes[key]):
                return 1.0
        return None

    def __repr__(self) -> str:
        return f"AttributePolicy({self.key!r}, {sorted(map(repr, self.values or ()))})"


class SpanCountPolicy(Policy):
    """Keeps traces with from ``min_spans`` to ``max_spans`` (inclusive) buffered spans."""

    def __init__(self, min_spans: int = 1, max_spans: int | None = None) -> None:
        self.min_spans = int(min_spans)
        self.max_spans = None if max_spans is None else int(max_spans)

    def evaluate(self, trace: TraceData) -> float | None:
        count = len(trace.spans)
        if count < self.min_spans:
            return None
        if self.max_spans is not None and count > self.max_spans:
            return None
        return 1.0

    def __repr__(self) -> str:
        return f"SpanCountPolicy({self.min_spans}, {self.max_spans})"


class PredicatePolicy(Policy):
    """Keeps traces for which your function returns true (a deterministic rule)."""

    def __init__(self, predicate: Callable[[TraceData], bool]) -> None:
        self.predicate = predicate

    def evaluate(self, trace: TraceData) -> float | None:
        return 1.0 if self.predicate(trace) else None


def _as_policy(policy: Policy | Callable[[TraceData], bool]) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if callable(policy):
        return PredicatePolicy(policy)
    raise TypeError(f"not a policy: {policy!r}")


def _ordered(policies: Sequence[Policy]) -> tuple[Policy, ...]:
    # Stateless rules first, so a rate limit spends a token only on a trace nothing else keeps.
    return tuple(p for p in policies if not p.stateful) + tuple(p for p in policies if p.stateful)


class AnyOf(Policy):
    """Keeps a trace when any policy matches; its probability is the highest among them."""

    def __init__(self, *policies: Policy | Callable[[TraceData], bool]) -> None:
        self.policies = _ordered([_as_policy(p) for p in policies])
        self.stateful = any(p.stateful for p in self.policies)

    def evaluate(self, trace: TraceData) -> float | None:
        best: float | None = None
        for policy in self.policies:
            if policy.stateful and best is not None:
                break
            result = policy.evaluate(trace)
            if result is None:
                continue
            if result >= 1.0:
                return 1.0
            if best is None or math.isnan(best) or result > best:
                best = result
        return best

    def __repr__(self) -> str:
        return f"AnyOf{self.policies!r}"


class AllOf(Policy):
    """Keeps a trace when every policy matches; its probability is the lowest among them."""

    def __init__(self, *policies: Policy | Callable[[TraceData], bool]) -> None:
        if not policies:
            raise ValueError("AllOf needs at least one policy")
        self.policies = _ordered([_as_policy(p) for p in policies])
        self.stateful = any(p.stateful for p in self.policies)

    def evaluate(self, trace: TraceData) -> float | None:
        lowest = 1.0
        for policy in self.policies:
            result = policy.evaluate(trace)
            if result is None:
                return None
            if math.isnan(result) or result < lowest:
                lowest = result
        return lowest

    def __repr__(self) -> str:
        return f"AllOf{self.policies!r}"


class FirstMatch(Policy):
    """Rules ``(policy, keep)`` in order: the first policy that matches decides.

    ``keep=False`` drops what it matches (health checks, say) before later rules can keep
    it. A trace no rule matches is dropped.
    """

    def __init__(self, *rules: tuple[Policy | Callable[[TraceData], bool], bool]) -> None:
        self.rules = tuple((_as_policy(policy), bool(keep)) for policy, keep in rules)
        self.stateful = any(p.stateful for p, _ in self.rules)

    def evaluate(self, trace: TraceData) -> float | None:
        for policy, keep in self.rules:
            result = policy.evaluate(trace)
            if result is not None:
                return result if keep else None
        return None

    def __repr__(self) -> str:
        return f"FirstMatch{self.rules!r}"


class DefaultPolicy(AnyOf):
    """``AnyOf(ErrorPolicy, AbnormalEndPolicy, LatencyPolicy, ProbabilisticPolicy)`` in one pass.

    The same decisions and probabilities as that ``AnyOf`` (which it is, for inspection),
    but one walk over the spans instead of three: the decision runs once per trace on
    the program's thread, so its cost is part of the per-span overhead.
    """

    def __init__(
        self,
        rate: float | Callable[[], float],
        latency_threshold_seconds: float = DEFAULT_LATENCY_THRESHOLD_SECONDS,
        exit_code_attribute: str = DEFAULT_EXIT_CODE_ATTRIBUTE,
        signal_attribute: str = DEFAULT_SIGNAL_ATTRIBUTE,
    ) -> None:
        self.errors = ErrorPolicy()
        self.abnormal = AbnormalEndPolicy(exit_code_attribute, signal_attribute)
        self.latency = LatencyPolicy(latency_threshold_seconds)
        self.probabilistic = ProbabilisticPolicy(rate)
        super().__init__(self.errors, self.abnormal, self.latency, self.probabilistic)

    def evaluate(self, trace: TraceData) -> float | None:
        error = StatusCode.ERROR
        signal_key = self.abnormal.signal_attribute
        code_key = self.abnormal.exit_code_attribute
        abnormal = self.abnormal._abnormal
        first = last = None
        for span in trace.spans:
            try:
                # The SDK's own fields: Status.status_code is a property (a call), and its
                # BoundedList and BoundedAttributes answer len() and ``in`` in Python; the
                # deque and dict inside them answer at C speed. Any other span type (or
                # field type) raises AttributeError here and is read the public way.
                if span._status._status_code is error:
                    return 1.0
                events = span._events._dq  # type: ignore[attr-defined]
                attributes = span._attributes._dict  # type: ignore[union-attr]
                start = span._start_time
                end = span._end_time
            except AttributeError:
                if _has_error(span):
                    return 1.0
                events = None
                attributes = _attributes(span)
                start, end = span.start_time, span.end_time
            if events and any(event.name == "exception" for event in events):
                return 1.0
            if (
                attributes
                and (signal_key in attributes or code_key in attributes)
                and abnormal(span, attributes)
            ):
                return 1.0
            if start is not None and (first is None or start < first):
                first = start
            if end is not None and (last is None or end > last):
                last = end
        if first is not None and last is not None:
            if (last - first) / 1e9 >= self.latency.threshold_seconds:
                return 1.0
        # ProbabilisticPolicy.evaluate, inline: this runs once per trace on the program's
        # thread, and each Python call saved there is a few percent of the per-span goal.
        probabilistic = self.probabilistic
        rate = probabilistic._rate_of()
        last_rate, threshold = probabilistic._last
        if last_rate != rate:
            threshold = threshold_for(min(1.0, max(0.0, float(rate))))
            probabilistic._last = (rate, threshold)
        randomness = trace._randomness
        if randomness < 0:
            trace._read_trace_state()
            randomness = trace._randomness
        if randomness >= threshold:
            return probability_of(threshold)
        return None

    def __repr__(self) -> str:
        return (
            f"DefaultPolicy(rate={self.probabilistic.rate}, "
            f"latency_threshold_seconds={self.latency.threshold_seconds}, "
            f"exit_code_attribute={self.abnormal.exit_code_attribute!r}, "
            f"signal_attribute={self.abnormal.signal_attribute!r})"
        )


def default_policy(
    rate: float | Callable[[], float],
    latency_threshold_seconds: float = DEFAULT_LATENCY_THRESHOLD_SECONDS,
    exit_code_attribute: str = DEFAULT_EXIT_CODE_ATTRIBUTE,
    signal_attribute: str = DEFAULT_SIGNAL_ATTRIBUTE,
) -> DefaultPolicy:
    """What ``procscope.setup()`` uses in tail mode: errors, abnormal ends, slow traces,
    and ``rate`` of the rest."""
    return DefaultPolicy(rate, latency_threshold_seconds, exit_code_attribute, signal_attribute)
