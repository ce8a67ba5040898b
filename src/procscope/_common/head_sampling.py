"""The instrumentors' cheap head-sampling gate: decide before making a span at all.

The SDK's start_span costs microseconds even when the sampler drops the span, more than
a queue put and get together. So every instrumentor asks :func:`should_record` first and,
on False, makes no span: inside a trace, the parent's sampled flag decides; for a new
root, the live sample rate does, and a "yes" is remembered for the sampler (see
:func:`take_root_decision`) so that the sampler does not draw a second time.
"""

from __future__ import annotations

import random
import threading

from opentelemetry import trace

from . import shared_state

_local = threading.local()


def should_record() -> bool:
    """True when a span started now in this context would be sampled."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return bool(span_context.trace_flags.sampled)
    rate = shared_state.settings().sample_rate
    if rate >= 1.0:
        return True
    if rate > 0.0 and random.random() < rate:
        # The caller starts a root span next, on this thread: tell the sampler it was drawn.
        _local.root_decided = True
        return True
    return False


def take_root_decision() -> bool:
    """For the sampler: True (once) if :func:`should_record` just drew "yes" for a root."""
    decided = getattr(_local, "root_decided", False)
    if decided:
        _local.root_decided = False
    return decided
