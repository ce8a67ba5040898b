"""procscope's in-process tail-sampling span processor for the OpenTelemetry SDK.

>>> from procscope.processors.sampling import TailSamplingProcessor, default_policy
>>> provider.add_span_processor(
...     TailSamplingProcessor(BatchSpanProcessor(exporter), default_policy(0.01))
... )

See docs/sampling.md.
"""

from __future__ import annotations

from procscope.core.head_sampling import PROBABILITY_ATTRIBUTE

from ._annotate import rewrite_trace_state, with_probability
from ._policies import (
    UNKNOWN_PROBABILITY,
    AbnormalEndPolicy,
    AllOf,
    AnyOf,
    AttributePolicy,
    DefaultPolicy,
    ErrorPolicy,
    FirstMatch,
    LatencyPolicy,
    Policy,
    PredicatePolicy,
    ProbabilisticPolicy,
    RateLimitPolicy,
    SpanCountPolicy,
    TraceData,
    default_policy,
)
from ._processor import Decision, SamplingStats, TailSamplingProcessor

__all__ = [
    "PROBABILITY_ATTRIBUTE",
    "UNKNOWN_PROBABILITY",
    "AbnormalEndPolicy",
    "AllOf",
    "AnyOf",
    "AttributePolicy",
    "Decision",
    "DefaultPolicy",
    "ErrorPolicy",
    "FirstMatch",
    "LatencyPolicy",
    "Policy",
    "PredicatePolicy",
    "ProbabilisticPolicy",
    "RateLimitPolicy",
    "SamplingStats",
    "SpanCountPolicy",
    "TailSamplingProcessor",
    "TraceData",
    "default_policy",
    "rewrite_trace_state",
    "with_probability",
]
