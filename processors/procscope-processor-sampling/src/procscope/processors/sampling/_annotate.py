"""Marking a kept span with the probability its trace was kept with.

The span the SDK hands to ``on_end`` is shared with every other processor of the
provider and is read-only, so the kept span passed on is a shallow copy with its own
attributes (``procscope.sampling.probability``) and, where the tail decision was stricter
than the head's, its own trace state whose ``ot=th:`` names the threshold really applied
(OpenTelemetry's consistent probability sampling). A kept trace whose probability nobody
can know (a rate limit kept it) loses its ``th`` and gets no probability attribute.
"""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceState

from procscope.core.head_sampling import (
    OT_KEY,
    PROBABILITY_ATTRIBUTE,
    format_threshold,
    parse_threshold,
    threshold_for,
)


def rewrite_trace_state(trace_state: TraceState | None, probability: float) -> TraceState | None:
    """The trace state whose ``th`` states ``probability``; the same object when it already does."""
    ot = trace_state.get(OT_KEY) if trace_state else None
    members = ot.split(";") if ot else []
    old = -1
    for member in members:
        if member.startswith("th:"):
            old = parse_threshold(member[3:])
    rest = [m for m in members if not m.startswith("th:")]
    if math.isnan(probability):
        if old < 0:
            return trace_state
        new_ot = ";".join(rest)
    else:
        threshold = threshold_for(probability)
        if threshold <= max(old, 0):
            return trace_state  # the head was as strict already: its th stands
        new_ot = ";".join([f"th:{format_threshold(threshold)}", *rest])
    if trace_state is None or not trace_state:
        return TraceState([(OT_KEY, new_ot)]) if new_ot else trace_state
    if not new_ot:
        return trace_state.delete(OT_KEY)
    if OT_KEY in trace_state:
        return trace_state.update(OT_KEY, new_ot)
    return trace_state.add(OT_KEY, new_ot)


def _attributes_with(old: Any, probability: float) -> Any:
    dropped = getattr(old, "dropped", 0)
    if dropped and isinstance(old, BoundedAttributes):
        # Keep the dropped count the exporters report: a BoundedAttributes like the SDK's.
        merged = BoundedAttributes(
            maxlen=None,
            attributes={**old, PROBABILITY_ATTRIBUTE: probability},
            immutable=True,
            max_value_len=old.max_value_len,
        )
        merged.maxlen = old.maxlen
        merged.dropped = dropped
        return merged
    if not old:
        return {PROBABILITY_ATTRIBUTE: probability}
    try:
        attributes = dict(old._dict)  # BoundedAttributes: copy its dict at C speed
    except AttributeError:
        attributes = dict(old)
    attributes[PROBABILITY_ATTRIBUTE] = probability
    return attributes


def with_probability(
    span: ReadableSpan, probability: float, states: dict[int, Any] | None = None
) -> ReadableSpan:
    """A copy of ``span`` that carries ``probability``; ``states`` caches rewritten trace states."""
    fields = getattr(span, "__dict__", None)
    if fields is None:
        return span
    clone = object.__new__(ReadableSpan)
    clone.__dict__.update(fields)
    if not math.isnan(probability):
        clone._attributes = _attributes_with(fields.get("_attributes"), probability)
    if probability == 1.0:
        return clone  # threshold 0: whatever th the trace state has stands
    context = fields.get("_context")
    if context is not None:
        old_state = context.trace_state
        key = id(old_state)
        new_state = states.get(key) if states is not None else None
        if new_state is None:
            new_state = rewrite_trace_state(old_state, probability)
            if states is not None:
                states[key] = new_state
        if new_state is not old_state:
            clone._context = SpanContext(
                context.trace_id,
                context.span_id,
                context.is_remote,
                context.trace_flags,
                new_state,
            )
    return clone
