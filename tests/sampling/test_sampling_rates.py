"""Statistical rate tests: 100,000 seeded trace ids, kept shares within 0.5 percentage points."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import TraceState

from procscope._sampler import AdjustableRateSampler
from procscope.core import head_sampling
from procscope.processors.sampling import (
    PROBABILITY_ATTRIBUTE,
    AnyOf,
    ErrorPolicy,
    ProbabilisticPolicy,
    TraceData,
)

N = 100_000
TOLERANCE = 0.005


def seeded_trace_ids(seed: int, count: int = N) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(128) or 1 for _ in range(count)]


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_probabilistic_policy_keeps_the_rate_of_100000_traces(rate: float) -> None:
    """ProbabilisticPolicy keeps rate of 100,000 seeded trace ids, within 0.5 points."""
    policy = ProbabilisticPolicy(rate)
    kept = sum(policy.evaluate(TraceData(t, [])) is not None for t in seeded_trace_ids(7))
    assert abs(kept / N - rate) <= TOLERANCE, kept


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_probabilistic_policy_edges_keep_none_or_all(rate: float) -> None:
    """Rate 0 keeps no trace and rate 1 keeps every trace."""
    policy = ProbabilisticPolicy(rate)
    kept = sum(policy.evaluate(TraceData(t, [])) is not None for t in seeded_trace_ids(3, 5000))
    assert kept == int(rate * 5000)


@pytest.mark.parametrize("rate", [0.01, 0.2, 0.5])
def test_head_sampler_keeps_the_rate_of_100000_root_spans(rate: float, live_rate) -> None:
    """AdjustableRateSampler samples rate of 100,000 roots (trace-id randomness), +-0.5 points."""
    sampler = AdjustableRateSampler(rate)
    kept = 0
    for trace_id in seeded_trace_ids(11):
        result = sampler.should_sample(None, trace_id, "root")
        kept += result.decision is Decision.RECORD_AND_SAMPLE
    assert abs(kept / N - rate) <= TOLERANCE, kept


@pytest.mark.parametrize("rate", [0.01, 0.3])
def test_gate_draws_the_live_rate_of_100000_roots(rate: float, live_rate) -> None:
    """should_record() says yes to rate of 100,000 new roots, within 0.5 points."""
    live_rate(rate)
    random.seed(12345)
    yes = 0
    for _ in range(N):
        if head_sampling.should_record():
            yes += 1
            assert head_sampling.take_root_randomness() >= head_sampling.threshold_for(rate)
    assert abs(yes / N - rate) <= TOLERANCE, yes


def test_tail_rate_through_a_real_pipeline(pipeline) -> None:
    """100,000 real root spans through the SDK and the tail processor: 10% kept, +-0.5 points."""
    p = pipeline(ProbabilisticPolicy(0.1), seed=99, max_buffered_spans=1000)
    for _ in range(N):
        p.tracer.start_span("op").end()
    kept = p.spans()
    assert abs(len(kept) / N - 0.1) <= TOLERANCE, len(kept)
    assert all(s.attributes[PROBABILITY_ATTRIBUTE] == pytest.approx(0.1) for s in kept)
    stats = p.processor.stats()
    assert stats.kept_traces + stats.dropped_traces == N
    assert stats.buffered_spans == 0


def test_stricter_stage_keeps_a_subset_of_a_looser_one() -> None:
    """Consistency: the traces kept at 5% are all among those kept at 20% (same randomness)."""
    loose, strict = ProbabilisticPolicy(0.2), ProbabilisticPolicy(0.05)
    ids = seeded_trace_ids(5, 20_000)
    kept_loose = {t for t in ids if loose.evaluate(TraceData(t, [])) is not None}
    kept_strict = {t for t in ids if strict.evaluate(TraceData(t, [])) is not None}
    assert kept_strict <= kept_loose
    assert abs(len(kept_strict) / len(ids) - 0.05) <= 0.01


def test_explicit_randomness_in_tracestate_decides_over_the_trace_id(pipeline) -> None:
    """A trace whose tracestate carries rv: is decided by rv, whatever its trace id says."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    p = pipeline(ProbabilisticPolicy(0.5))
    cases = {
        # trace id whose low bits say "keep", rv says "drop"; and the other way round
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF: "rv:00000000000001",
        0x10000000000000000000000000000001: "rv:ffffffffffffff",
    }
    for trace_id, ot in cases.items():
        parent = SpanContext(trace_id, 7, True, TraceFlags(1), TraceState([("ot", ot)]))
        p.tracer.start_span("op", context=set_span_in_context(NonRecordingSpan(parent))).end()
    assert p.kept_trace_ids() == {0x10000000000000000000000000000001}


def test_errors_kept_at_one_percent_in_a_real_pipeline(pipeline) -> None:
    """At a 1% rate with the error policy, every one of 300 traces with an error is kept."""
    from opentelemetry.trace import StatusCode

    p = pipeline(AnyOf(ErrorPolicy(), ProbabilisticPolicy(0.01)), seed=4)
    error_traces = set()
    for i in range(20_000):
        with p.tracer.start_as_current_span("root") as root:
            with p.tracer.start_as_current_span("child") as child:
                if i % 67 == 0:
                    child.set_status(StatusCode.ERROR, "boom")
                    error_traces.add(root.get_span_context().trace_id)
    kept = p.kept_trace_ids()
    assert error_traces <= kept
    others = kept - error_traces
    assert abs(len(others) / (20_000 - len(error_traces)) - 0.01) <= TOLERANCE
    by_trace = {s.context.trace_id: s.attributes[PROBABILITY_ATTRIBUTE] for s in p.spans()}
    assert {by_trace[t] for t in error_traces} == {1.0}
    assert {round(by_trace[t], 6) for t in others} == {0.01}
