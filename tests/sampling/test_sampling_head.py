"""The head: the instrumentors' gate (should_record) and the consistent sampler agree."""

from __future__ import annotations

import random
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from procscope._sampler import AdjustableRateSampler
from procscope.core import head_sampling
from procscope.processors.sampling import PROBABILITY_ATTRIBUTE, ProbabilisticPolicy


@pytest.fixture
def provider():
    """A real provider with procscope's sampler at rate 0.5 and an in-memory exporter."""
    exporter = InMemorySpanExporter()
    sampler = AdjustableRateSampler(0.5)
    tp = TracerProvider(sampler=sampler)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tp.exporter = exporter  # type: ignore[attr-defined]
    tp.the_sampler = sampler  # type: ignore[attr-defined]
    yield tp
    tp.shutdown()


def test_gate_follows_the_live_rate_at_its_edges(live_rate) -> None:
    """Rate 0 never records a new root; rate 1 always does."""
    live_rate(0.0)
    assert not any(head_sampling.should_record() for _ in range(1000))
    live_rate(1.0)
    assert all(head_sampling.should_record() for _ in range(1000))


def test_gate_follows_the_current_span_inside_a_trace(live_rate) -> None:
    """Inside a trace the parent's sampled flag decides, whatever the rate."""
    sampled = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(1)))
    unsampled = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(0)))
    live_rate(0.0)
    with trace.use_span(sampled):
        assert head_sampling.should_record()
    live_rate(1.0)
    with trace.use_span(unsampled):
        assert not head_sampling.should_record()


def test_tail_mode_records_every_root(live_rate) -> None:
    """With tail mode on, the gate records every new root even at rate 0."""
    live_rate(0.0)
    head_sampling.set_records_every_trace(True)
    assert all(head_sampling.should_record() for _ in range(100))
    assert head_sampling.take_root_randomness() == -1  # nothing drawn, nothing handed over


def test_gate_hands_its_draw_to_the_sampler(provider, live_rate) -> None:
    """The plugins' gate (procscope-core) draws "yes"; the root package's sampler writes th
    and rv from that draw."""
    from procscope.core import head_sampling as plugin_copy

    live_rate(0.5)
    random.seed(3)
    while not plugin_copy.should_record():
        pass
    span = provider.get_tracer("t").start_span("root")
    span.end()
    ot = span.get_span_context().trace_state.get("ot")
    threshold, randomness = head_sampling.parse_ot(ot)
    assert threshold == head_sampling.threshold_for(0.5)
    assert randomness >= threshold
    assert span.attributes[PROBABILITY_ATTRIBUTE] == 0.5
    assert head_sampling.take_root_randomness() == -1  # consumed exactly once


def test_hand_over_stays_on_its_thread(live_rate) -> None:
    """A "yes" drawn on one thread is not taken by a root started on another thread."""
    live_rate(0.5)
    random.seed(5)
    while not head_sampling.should_record():
        pass
    seen: list[int] = []
    other = threading.Thread(target=lambda: seen.append(head_sampling.take_root_randomness()))
    other.start()
    other.join()
    assert seen == [-1]
    assert head_sampling.take_root_randomness() >= 0


def test_sampler_children_inherit_decision_state_and_probability(provider) -> None:
    """Children of a sampled root keep its tracestate and carry the same probability."""
    tracer = provider.get_tracer("t")
    for _ in range(50):
        with tracer.start_as_current_span("root") as root:
            with tracer.start_as_current_span("child") as child:
                pass
        if root.get_span_context().trace_flags.sampled:
            assert child.get_span_context().trace_state == root.get_span_context().trace_state
            assert child.attributes[PROBABILITY_ATTRIBUTE] == 0.5
        else:
            assert not child.get_span_context().trace_flags.sampled
    spans = provider.exporter.get_finished_spans()
    assert spans and all(s.context.trace_state.get("ot") == "th:8" for s in spans)


def test_sampler_drops_children_of_unsampled_remote_parents(provider) -> None:
    """A remote unsampled parent makes the child unsampled; a sampled one keeps its tracestate."""
    sampler = provider.the_sampler
    ctx_off = trace.set_span_in_context(NonRecordingSpan(SpanContext(9, 9, True, TraceFlags(0))))
    assert sampler.should_sample(ctx_off, 9, "c").decision is Decision.DROP
    state = TraceState([("ot", "th:c;rv:ffffffffffffff")])
    ctx_on = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(9, 9, True, TraceFlags(1), state))
    )
    result = sampler.should_sample(ctx_on, 9, "c")
    assert result.decision is Decision.RECORD_AND_SAMPLE
    assert result.trace_state == state
    assert result.attributes[PROBABILITY_ATTRIBUTE] == 0.25


def test_sampler_rate_changes_live(provider) -> None:
    """set_rate changes the next decisions and the rate it reports."""
    sampler = provider.the_sampler
    sampler.set_rate(0.0)
    assert sampler.rate == 0.0
    assert all(
        sampler.should_sample(None, random.getrandbits(128), "r").decision is Decision.DROP
        for _ in range(200)
    )
    sampler.set_rate(1.0)
    results = [sampler.should_sample(None, random.getrandbits(128), "r") for _ in range(200)]
    assert all(r.decision is Decision.RECORD_AND_SAMPLE for r in results)
    assert all(PROBABILITY_ATTRIBUTE not in r.attributes for r in results)  # rate 1: no claim


def test_head_and_tail_compose_consistently(provider) -> None:
    """Head at 50% then tail at 25%: the tail keeps a subset of the head's traces, marked 25%."""
    from procscope.processors.sampling import TailSamplingProcessor

    tail_exporter = InMemorySpanExporter()
    provider.add_span_processor(
        TailSamplingProcessor(SimpleSpanProcessor(tail_exporter), ProbabilisticPolicy(0.25))
    )
    tracer = provider.get_tracer("t")
    for _ in range(4000):
        tracer.start_span("root").end()
    head_kept = {s.context.trace_id for s in provider.exporter.get_finished_spans()}
    tail_spans = tail_exporter.get_finished_spans()
    tail_kept = {s.context.trace_id for s in tail_spans}
    assert tail_kept <= head_kept
    assert abs(len(head_kept) / 4000 - 0.5) < 0.05
    assert abs(len(tail_kept) / 4000 - 0.25) < 0.05
    assert {s.attributes[PROBABILITY_ATTRIBUTE] for s in tail_spans} == {0.25}
    assert {s.context.trace_state.get("ot") for s in tail_spans} == {"th:c"}


def test_threshold_arithmetic_matches_the_spec() -> None:
    """th values as in OpenTelemetry's tracestate-probability-sampling examples."""
    assert head_sampling.format_threshold(head_sampling.threshold_for(0.5)) == "8"
    assert head_sampling.format_threshold(head_sampling.threshold_for(0.25)) == "c"
    assert (
        head_sampling.format_threshold(head_sampling.threshold_for(0.01)) == "fd70a3d70a3d71"
    )  # as the SDK computes it
    assert head_sampling.format_threshold(head_sampling.threshold_for(1.0)) == "0"
    assert head_sampling.parse_threshold("8") == 2**55
    assert head_sampling.parse_ot("th:c;rv:00000000000001;x:y") == (3 * 2**54, 1)
    assert head_sampling.parse_ot("th:zz;rv:short") == (-1, -1)
    assert head_sampling.probability_of(head_sampling.threshold_for(0.01)) == pytest.approx(0.01)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_sampler_keeps_the_spans_own_start_attributes(rate: float, live_rate) -> None:
    """Sampled roots and children keep the attributes they were started with."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=AdjustableRateSampler(rate))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(40):
        with tracer.start_as_current_span("root", attributes={"mine": 1}):
            with tracer.start_as_current_span("child", attributes={"also.mine": "x"}):
                pass
    provider.shutdown()
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        own = {"mine": 1} if span.name == "root" else {"also.mine": "x"}
        expected = dict(own)
        if rate < 1.0:
            expected[PROBABILITY_ATTRIBUTE] = rate
        assert dict(span.attributes) == expected
