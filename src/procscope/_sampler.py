"""The head sampler procscope installs: parent-based, with a rate that can change live."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from ._common.head_sampling import take_root_decision


class AdjustableRateSampler(Sampler):
    """``ParentBased(TraceIdRatioBased(rate))`` whose rate ``procscope.configure`` changes.

    Tracers keep the sampler object they were created with, so a new rate must be a
    change inside this object, not a new sampler. Swapping one reference is atomic, so
    a span being sampled while the rate changes sees either the old or the new rate.
    """

    def __init__(self, rate: float) -> None:
        self._delegate: Sampler = ParentBased(TraceIdRatioBased(rate))
        self._rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        self._delegate = ParentBased(TraceIdRatioBased(rate))
        self._rate = rate

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
        if take_root_decision():
            # An instrumentor's gate already drew "sampled" for this root span.
            return ALWAYS_ON.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"ProcscopeAdjustableRate{{{self._rate}}}"
