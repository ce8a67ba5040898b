"""The head sampler procscope installs: parent-based, consistent, with a live rate.

For a root span it keeps the trace when the trace's randomness R is at least the
threshold T of the current rate (OpenTelemetry's consistent probability sampling). R is
the value the instrumentors' gate drew (:func:`head_sampling.take_root_randomness`), or,
for a root made without the gate (the program's own spans), the low 56 bits of the trace
id. A kept trace carries ``ot=th:T`` (plus ``rv:R`` when R was drawn) in its trace state,
and its spans carry ``procscope.sampling.probability``. A child follows its parent's
sampled flag and inherits its trace state, in this process or another.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

from procscope.core.head_sampling import (
    OT_KEY,
    PROBABILITY_ATTRIBUTE,
    RANDOMNESS_MASK,
    format_threshold,
    parse_ot,
    probability_of,
    records_every_trace,
    take_root_randomness,
    threshold_for,
)

_DROP = SamplingResult(Decision.DROP)


def _with_callers(attributes: Attributes, ours: Attributes) -> Attributes:
    """The span's own start attributes plus ours: the SDK gives a sampled span only the
    attributes in the SamplingResult, so leaving the caller's out would erase them."""
    if not attributes:
        return ours
    if not ours:
        return attributes
    return {**attributes, **ours}


class AdjustableRateSampler(Sampler):
    """Parent-based consistent probability sampler whose rate ``procscope.configure`` changes.

    Tracers keep the sampler object they were created with, so a new rate is a change
    inside this object. The rate and its threshold are swapped together as one tuple (an
    atomic reference swap), so a span sampled while the rate changes sees either the old
    pair or the new one, never a mix.
    """

    def __init__(self, rate: float) -> None:
        self._rate_and_threshold = (rate, threshold_for(rate))
        # Probability attributes by ``th`` value, so children do not parse it per span.
        self._attributes_by_th: dict[str, Attributes] = {}

    @property
    def rate(self) -> float:
        return self._rate_and_threshold[0]

    def set_rate(self, rate: float) -> None:
        self._rate_and_threshold = (rate, threshold_for(rate))

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            if not parent.trace_flags.sampled:
                return SamplingResult(Decision.DROP, None, parent.trace_state)
            parent_state = parent.trace_state
            ot = parent_state.get(OT_KEY) if parent_state else None
            if ot is None:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)
            return SamplingResult(
                Decision.RECORD_AND_SAMPLE,
                _with_callers(attributes, self._attributes_for(ot)),
                parent_state,
            )
        randomness = take_root_randomness()
        threshold = self._rate_and_threshold[1]
        if threshold == 0 or records_every_trace():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        drawn = randomness >= 0
        if not drawn:
            randomness = trace_id & RANDOMNESS_MASK
            if randomness < threshold:
                return _DROP
        elif randomness < threshold:
            # The gate drew "yes" under an older, looser rate: keep the promise it made
            # (the caller is making a span) but claim no threshold we did not apply.
            threshold = 0
        ot = f"th:{format_threshold(threshold)}"
        if drawn:
            ot += f";rv:{randomness:014x}"
        if trace_state:
            state = (
                trace_state.update(OT_KEY, ot)
                if OT_KEY in trace_state
                else trace_state.add(OT_KEY, ot)
            )
        else:
            state = TraceState([(OT_KEY, ot)])
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE,
            _with_callers(attributes, {PROBABILITY_ATTRIBUTE: probability_of(threshold)}),
            state,
        )

    def _attributes_for(self, ot: str) -> Attributes:
        """``{probability}`` for the ``th`` inside an ``ot`` value, cached by that ``th``."""
        start = ot.find("th:")
        if start < 0:
            return None
        end = ot.find(";", start)
        th = ot[start + 3 :] if end < 0 else ot[start + 3 : end]
        cached = self._attributes_by_th.get(th)
        if cached is not None:
            return cached
        threshold = parse_ot("th:" + th)[0]
        if threshold < 0:
            return None
        result: Attributes = MappingProxyType({PROBABILITY_ATTRIBUTE: probability_of(threshold)})
        if len(self._attributes_by_th) > 256:  # rates change rarely; stay bounded anyway
            self._attributes_by_th = {}
        self._attributes_by_th[th] = result
        return result

    def get_description(self) -> str:
        return f"ProcscopeConsistentRate{{{self.rate}}}"
