"""The instrumentors' cheap head-sampling gate, and consistent-probability arithmetic.

The SDK's start_span costs microseconds even when the sampler drops the span, more than
a queue put and get together. So every instrumentor asks :func:`should_record` first and,
on False, makes no span: inside a trace, the parent's sampled flag decides; for a new
root, the live sample rate does.

Decisions follow OpenTelemetry's consistent probability sampling
(https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/):
a trace has a 56-bit randomness value R and a rate p gives a rejection threshold
``T = 2**56 - round(p * 2**56)``; the trace is kept when ``R >= T``. Because the gate runs
before the SDK has made a trace id, it draws R itself; a "yes" hands R to the sampler (see
:func:`take_root_randomness`), which writes it to the trace state as ``ot=th:T;rv:R``.
Every process and every later stage (the tail processor) then compares the same R with
its own threshold, so a trace is kept or dropped whole, and a stricter stage keeps a
subset of what a looser one kept.

What must be one per process (the thread-local hand-over to the sampler, the "record
every trace" flag of tail mode) lives on :mod:`shared_state`, whose dict the hot paths
read directly.
"""

from __future__ import annotations

import contextvars
import random
import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import TraceState

from . import shared_state

RANDOM_BITS = 56
RANDOMNESS_MASK = (1 << RANDOM_BITS) - 1
MAX_THRESHOLD = 1 << RANDOM_BITS  # threshold of probability 0: nothing passes
_SCALE = float(MAX_THRESHOLD)
OT_KEY = "ot"

# Attribute that carries the probability with which a span's trace was kept.
PROBABILITY_ATTRIBUTE = "procscope.sampling.probability"

_state: Any = shared_state.get()
_live = shared_state.settings()


class _HandOver(threading.local):
    # A class-level default: reading it on a thread that never drew raises no exception.
    randomness = -1


# One thread-local per process, shared by every copy of this module: the gate may run in
# the messaging plugin's copy and the sampler reads from the root package's copy.
_hand_over: Any = _state.__dict__.setdefault("head_sampling_local", _HandOver())
_getrandbits = random.getrandbits
# Made once per process so that the gate reads a plain attribute: a getattr() default on a
# module whose attribute is missing costs a microsecond (it builds an AttributeError).
_state.__dict__.setdefault("head_records_every_trace", False)


def _current_context_var() -> contextvars.ContextVar[Any] | None:
    """The SDK's context variable, read directly: it saves four calls per gate."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, contextvars.ContextVar) else None


_context_var = _current_context_var()


def sdk_context_var() -> contextvars.ContextVar[Any] | None:
    """The SDK's own context variable when its runtime context is the default contextvars
    one, else None. Its ``get`` is ``otel_context.get_current()`` in one C call, for the
    hot paths (a put, a thread start) where the four Python calls of the API show."""
    return _context_var
_SPAN_KEY = getattr(trace.propagation, "_SPAN_KEY", None)


def threshold_for(rate: float) -> int:
    """The rejection threshold of a probability (0 keeps everything, 2**56 nothing)."""
    if rate >= 1.0:
        return 0
    if not rate > 0.0:
        return MAX_THRESHOLD
    return MAX_THRESHOLD - round(rate * _SCALE)


def probability_of(threshold: int) -> float:
    """The probability a threshold keeps."""
    return (MAX_THRESHOLD - threshold) / _SCALE


def format_threshold(threshold: int) -> str:
    """A threshold as the spec's ``th`` value: 14 hex digits, trailing zeros removed."""
    if threshold <= 0:
        return "0"
    return f"{threshold:014x}".rstrip("0")


def parse_threshold(text: str) -> int:
    """A ``th`` value back to a threshold; -1 when it is malformed."""
    if not text or len(text) > 14:
        return -1
    try:
        return int(text, 16) << (4 * (14 - len(text)))
    except ValueError:
        return -1


def parse_ot(ot: str | None) -> tuple[int, int]:
    """``(threshold, randomness)`` from an ``ot`` trace-state value; -1 where absent."""
    threshold = randomness = -1
    if not ot or len(ot) > 256:
        return threshold, randomness
    for member in ot.split(";"):
        if member.startswith("th:"):
            threshold = parse_threshold(member[3:])
        elif member.startswith("rv:") and len(member) == 17:
            try:
                randomness = int(member[3:], 16)
            except ValueError:
                randomness = -1
    return threshold, randomness


def trace_randomness(trace_id: int, trace_state: TraceState | None) -> int:
    """The trace's randomness: explicit ``rv`` from the trace state, else its id's low 56 bits."""
    if trace_state is not None:
        ot = trace_state.get(OT_KEY)
        if ot is not None:
            randomness = parse_ot(ot)[1]
            if randomness >= 0:
                return randomness
    return trace_id & RANDOMNESS_MASK


def head_threshold(trace_state: TraceState | None) -> int:
    """The threshold the head applied to a trace (``th``), 0 when the state names none."""
    if trace_state is not None:
        ot = trace_state.get(OT_KEY)
        if ot is not None:
            threshold = parse_ot(ot)[0]
            if threshold >= 0:
                return threshold
    return 0


# The threshold of the last rate seen; each copy of the module keeps its own cache.
_cached = [1.0, 0]


def records_every_trace() -> bool:
    """True in tail mode: the head records every trace and the tail processor decides."""
    return bool(_state.head_records_every_trace)


def set_records_every_trace(value: bool) -> None:
    """Switch tail mode on or off for this process (``build_processors`` does it)."""
    _state.head_records_every_trace = bool(value)


def should_record() -> bool:
    """True when a span started now in this context would be sampled."""
    if _context_var is not None and _SPAN_KEY is not None:
        span = _context_var.get().get(_SPAN_KEY)
        span_context = span.get_span_context() if span is not None else None
    else:
        span_context = trace.get_current_span().get_span_context()
    if span_context is not None and span_context.is_valid:
        return bool(span_context.trace_flags & 1)
    rate = _live.sample_rate
    if rate >= 1.0 or _state.head_records_every_trace:
        return True
    cached = _cached
    if cached[0] != rate:
        cached[1] = threshold_for(rate)
        cached[0] = rate
    randomness = _getrandbits(RANDOM_BITS)
    if randomness >= cached[1]:
        # The caller starts a root span next, on this thread: hand the draw to the sampler.
        _hand_over.randomness = randomness
        return True
    return False



def should_record_root() -> bool:
    """should_record() for a caller that has just found the current context empty.

    An empty context holds no span (and no suppression): the answer is the draw for a new
    root, exactly as in should_record(), without reading the context again. The messaging
    instrumentor's put checks the context inline, and a put outside any trace (a new
    trace at the sample rate) is its commonest case after "inside an unsampled span".
    """
    rate = _live.sample_rate
    if rate >= 1.0 or _state.head_records_every_trace:
        return True
    cached = _cached
    if cached[0] != rate:
        cached[1] = threshold_for(rate)
        cached[0] = rate
    randomness = _getrandbits(RANDOM_BITS)
    if randomness >= cached[1]:
        _hand_over.randomness = randomness
        return True
    return False

def take_root_randomness() -> int:
    """For the sampler: the randomness :func:`should_record` just drew "yes" with, once; else -1."""
    randomness: int = _hand_over.randomness
    if randomness >= 0:
        _hand_over.randomness = -1
    return randomness


def take_root_decision() -> bool:
    """For the sampler: True (once) if :func:`should_record` just drew "yes" for a root."""
    return take_root_randomness() >= 0
