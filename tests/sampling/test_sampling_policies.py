"""Every policy and composite, judged on real SDK spans through the tail processor."""

from __future__ import annotations

import math
import time

import pytest
from opentelemetry.trace import StatusCode

from procscope.processors.sampling import (
    PROBABILITY_ATTRIBUTE,
    AbnormalEndPolicy,
    AllOf,
    AnyOf,
    AttributePolicy,
    ErrorPolicy,
    FirstMatch,
    LatencyPolicy,
    PredicatePolicy,
    ProbabilisticPolicy,
    RateLimitPolicy,
    SpanCountPolicy,
    default_policy,
)


def make_trace(p, name: str, children: int = 1, **child_attributes) -> int:
    """One root span with children; returns the trace id."""
    with p.tracer.start_as_current_span(name) as root:
        for _ in range(children):
            with p.tracer.start_as_current_span(name + ".child", attributes=child_attributes):
                pass
    return root.get_span_context().trace_id


def test_error_policy_keeps_error_status_and_exception_events(pipeline) -> None:
    """ErrorPolicy keeps traces with a span in status ERROR or an exception event, not others."""
    p = pipeline(ErrorPolicy())
    with p.tracer.start_as_current_span("status") as status_root:
        with p.tracer.start_as_current_span("child") as child:
            child.set_status(StatusCode.ERROR)
    with p.tracer.start_as_current_span("exception", record_exception=True) as exc_root:
        exc_root.record_exception(ValueError("bad"))
    plain = make_trace(p, "plain")
    kept = p.kept_trace_ids()
    assert status_root.get_span_context().trace_id in kept
    assert exc_root.get_span_context().trace_id in kept
    assert plain not in kept
    assert len(p.spans()) == 3  # the whole error trace (2 spans) + the exception root


def test_error_policy_keeps_a_trace_whose_span_raised(pipeline) -> None:
    """An exception escaping a span (set_status_on_exception) gets its trace kept."""
    p = pipeline(ErrorPolicy())
    with pytest.raises(RuntimeError):
        with p.tracer.start_as_current_span("failing"):
            raise RuntimeError("boom")
    assert len(p.spans()) == 1


def test_abnormal_end_policy_keys_on_signal_and_exit_code(pipeline) -> None:
    """AbnormalEndPolicy keeps signal deaths and non-zero exits, drops a clean exit 0."""
    p = pipeline(AbnormalEndPolicy())
    signalled = make_trace(p, "killed", **{"procscope.process.exit.signal": 9})
    failed = make_trace(p, "failed", **{"process.exit.code": 3})
    clean = make_trace(p, "clean", **{"process.exit.code": 0})
    none = make_trace(p, "thread")
    assert p.kept_trace_ids() == {signalled, failed}
    assert clean not in p.kept_trace_ids() and none not in p.kept_trace_ids()


def test_abnormal_end_policy_exit_code_zero_with_error_status_is_abnormal(pipeline) -> None:
    """A process span with exit code 0 but status ERROR (crash reported by its parent) is kept."""
    p = pipeline(AbnormalEndPolicy())
    with p.tracer.start_as_current_span("proc", attributes={"process.exit.code": 0}) as span:
        span.set_status(StatusCode.ERROR, "died")
    assert len(p.spans()) == 1


def test_abnormal_end_policy_attribute_names_are_configurable(pipeline) -> None:
    """Custom attribute names are matched instead of the defaults."""
    p = pipeline(AbnormalEndPolicy(exit_code_attribute="x.code", signal_attribute="x.sig"))
    custom = make_trace(p, "custom", **{"x.sig": 15})
    default = make_trace(p, "default", **{"procscope.process.exit.signal": 15})
    assert p.kept_trace_ids() == {custom}
    assert default not in p.kept_trace_ids()


def test_latency_policy_keeps_slow_traces(pipeline) -> None:
    """LatencyPolicy keeps a trace lasting past its threshold and drops a fast one."""
    p = pipeline(LatencyPolicy(0.05))
    fast = make_trace(p, "fast")
    with p.tracer.start_as_current_span("slow") as slow:
        time.sleep(0.06)
    assert p.kept_trace_ids() == {slow.get_span_context().trace_id}
    assert fast not in p.kept_trace_ids()


def test_latency_policy_measures_whole_trace_not_one_span(pipeline) -> None:
    """Two quick spans far apart make a slow trace: duration is earliest start to latest end."""
    p = pipeline(LatencyPolicy(0.05))
    with p.tracer.start_as_current_span("root"):
        with p.tracer.start_as_current_span("a"):
            pass
        time.sleep(0.06)
        with p.tracer.start_as_current_span("b"):
            pass
    assert len(p.spans()) == 3


def test_probabilistic_policy_reads_a_live_rate(pipeline) -> None:
    """A callable rate is read at every decision: 0 drops, then 1 keeps."""
    rate = [0.0]
    p = pipeline(ProbabilisticPolicy(lambda: rate[0]))
    dropped = make_trace(p, "a")
    rate[0] = 1.0
    kept = make_trace(p, "b")
    assert p.kept_trace_ids() == {kept}
    assert dropped not in p.kept_trace_ids()


def test_rate_limit_policy_keeps_its_burst_then_stops(pipeline) -> None:
    """A token bucket of 5 at a tiny refill rate keeps exactly 5 of 50 traces made at once."""
    p = pipeline(RateLimitPolicy(0.001, burst=5))
    for i in range(50):
        make_trace(p, f"t{i}")
    assert len(p.kept_trace_ids()) == 5
    # Nobody knows the probability of a rate-limited trace: no attribute claims one.
    assert all(PROBABILITY_ATTRIBUTE not in s.attributes for s in p.spans())


def test_rate_limit_policy_refills(pipeline) -> None:
    """After its bucket is empty, a rate limit keeps again once tokens have refilled."""
    policy = RateLimitPolicy(1.0, burst=1)
    p = pipeline(policy)
    make_trace(p, "first")
    make_trace(p, "second")  # bucket empty: dropped (unless a whole second passed)
    time.sleep(1.1)  # more than one token's worth of refill, capped at the burst of 1
    make_trace(p, "third")
    assert sorted(s.name for s in p.spans() if "." not in s.name) == ["first", "third"]


def test_attribute_policy_values_presence_and_predicate(pipeline) -> None:
    """AttributePolicy matches listed values, mere presence, or a predicate."""
    by_value = pipeline(AttributePolicy("tenant", values=["vip"]))
    vip = make_trace(by_value, "vip", tenant="vip")
    make_trace(by_value, "plain", tenant="other")
    assert by_value.kept_trace_ids() == {vip}

    by_presence = pipeline(AttributePolicy("debug"))
    flagged = make_trace(by_presence, "flagged", debug=True)
    make_trace(by_presence, "unflagged")
    assert by_presence.kept_trace_ids() == {flagged}

    by_predicate = pipeline(AttributePolicy("size", predicate=lambda v: v > 100))
    big = make_trace(by_predicate, "big", size=500)
    make_trace(by_predicate, "small", size=5)
    assert by_predicate.kept_trace_ids() == {big}


def test_span_count_policy_bounds(pipeline) -> None:
    """SpanCountPolicy keeps traces whose span count lies within its bounds."""
    p = pipeline(SpanCountPolicy(min_spans=3, max_spans=4))
    two = make_trace(p, "two", children=1)
    three = make_trace(p, "three", children=2)
    four = make_trace(p, "four", children=3)
    five = make_trace(p, "five", children=4)
    assert p.kept_trace_ids() == {three, four}
    assert two not in p.kept_trace_ids() and five not in p.kept_trace_ids()


def test_predicate_policy_and_plain_callables(pipeline) -> None:
    """A plain function is a deterministic policy: it sees the whole trace."""
    p = pipeline(lambda trace: any(s.name == "wanted" for s in trace.spans))
    with p.tracer.start_as_current_span("root") as root:
        with p.tracer.start_as_current_span("wanted"):
            pass
    make_trace(p, "unwanted")
    assert p.kept_trace_ids() == {root.get_span_context().trace_id}
    explicit = pipeline(PredicatePolicy(lambda trace: len(trace.spans) == 2))
    two = make_trace(explicit, "two")
    make_trace(explicit, "three", children=2)
    assert explicit.kept_trace_ids() == {two}


def test_any_of_takes_the_highest_probability(pipeline) -> None:
    """AnyOf keeps on any match; an error trace gets probability 1 whatever the order."""
    p = pipeline(AnyOf(ProbabilisticPolicy(1.0), ErrorPolicy()))
    with p.tracer.start_as_current_span("err") as span:
        span.set_status(StatusCode.ERROR)
    assert [s.attributes[PROBABILITY_ATTRIBUTE] for s in p.spans()] == [1.0]


def test_any_of_asks_rate_limit_only_when_nothing_else_kept(pipeline) -> None:
    """A rate limit inside AnyOf spends no token on traces another policy keeps."""
    limit = RateLimitPolicy(0.001, burst=1)
    p = pipeline(AnyOf(limit, ErrorPolicy()))
    for _ in range(3):
        with p.tracer.start_as_current_span("err") as span:
            span.set_status(StatusCode.ERROR)
    make_trace(p, "plain")  # the one token goes here
    make_trace(p, "plain2")  # no token left
    names = sorted(s.name for s in p.spans() if "." not in s.name)
    assert names == ["err", "err", "err", "plain"]


def test_all_of_needs_every_policy_and_takes_the_lowest_probability(pipeline) -> None:
    """AllOf keeps only traces matching all of its policies, with the lowest probability."""
    p = pipeline(AllOf(AttributePolicy("kind", ["job"]), ProbabilisticPolicy(1.0), ErrorPolicy()))
    with p.tracer.start_as_current_span("job-err", attributes={"kind": "job"}) as span:
        span.set_status(StatusCode.ERROR)
    make_trace(p, "job-ok", kind="job")
    with p.tracer.start_as_current_span("other-err") as span:
        span.set_status(StatusCode.ERROR)
    assert [s.name for s in p.spans()] == ["job-err"]
    with pytest.raises(ValueError):
        AllOf()


def test_first_match_drops_before_later_rules_keep(pipeline) -> None:
    """FirstMatch: a drop rule for health checks wins over a later keep-errors rule."""
    p = pipeline(
        FirstMatch(
            (AttributePolicy("route", ["/health"]), False),
            (ErrorPolicy(), True),
            (LatencyPolicy(0.0), True),
        )
    )
    with p.tracer.start_as_current_span("health", attributes={"route": "/health"}) as span:
        span.set_status(StatusCode.ERROR)
    with p.tracer.start_as_current_span("api", attributes={"route": "/api"}) as span:
        span.set_status(StatusCode.ERROR)
    make_trace(p, "anything")
    assert sorted(s.name for s in p.spans()) == ["anything", "anything.child", "api"]


def test_first_match_with_no_match_drops(pipeline) -> None:
    """A trace that no FirstMatch rule matches is dropped."""
    p = pipeline(FirstMatch((ErrorPolicy(), True)))
    make_trace(p, "ok")
    assert p.spans() == []


def test_default_policy_keeps_errors_abnormal_slow_and_its_rate(pipeline) -> None:
    """default_policy(0): errors, abnormal ends and slow traces kept, plain ones dropped."""
    p = pipeline(default_policy(0.0, latency_threshold_seconds=0.05))
    with p.tracer.start_as_current_span("error") as span:
        span.set_status(StatusCode.ERROR)
    make_trace(p, "killed", **{"procscope.process.exit.signal": 9})
    with p.tracer.start_as_current_span("slow"):
        time.sleep(0.06)
    make_trace(p, "plain")
    assert sorted(s.name for s in p.spans() if "." not in s.name) == ["error", "killed", "slow"]


def test_policy_arguments_are_checked() -> None:
    """Bad policy arguments fail at construction with a clear error."""
    with pytest.raises(ValueError):
        ProbabilisticPolicy(1.5)
    with pytest.raises(ValueError):
        RateLimitPolicy(0)
    with pytest.raises(ValueError):
        LatencyPolicy(-1)
    with pytest.raises(TypeError):
        AnyOf(42)  # type: ignore[arg-type]
    assert math.isnan(RateLimitPolicy(1).evaluate(None))  # type: ignore[arg-type]


def test_default_policy_decides_exactly_like_the_any_of_it_stands_for(pipeline) -> None:
    """DefaultPolicy's one-pass check gives the same answers as AnyOf of its four policies."""
    from opentelemetry.trace import set_span_in_context

    from procscope.processors.sampling import TraceData

    p = pipeline(lambda trace: True)  # keep everything: the spans are judged below
    for i in range(400):
        kind = i % 6
        root = p.tracer.start_span("root")
        attributes = {}
        if kind == 1:
            attributes["process.exit.code"] = i % 3
        elif kind == 2:
            attributes["procscope.process.exit.signal"] = 9
        child = p.tracer.start_span(
            "child", context=set_span_in_context(root), attributes=attributes
        )
        if kind == 3:
            child.set_status(StatusCode.ERROR)
        elif kind == 4:
            child.add_event("exception", {"exception.type": "ValueError"})
        child.end()
        # Every 7th trace "lasts" 2 s; the others end right away (well under 1 s).
        root.end(end_time=time.time_ns() + (2_000_000_000 if i % 7 == 0 else 0))
    spans_by_trace: dict[int, list] = {}
    for span in p.spans():
        spans_by_trace.setdefault(span.context.trace_id, []).append(span)
    assert len(spans_by_trace) == 400
    reference = AnyOf(
        ErrorPolicy(), AbnormalEndPolicy(), LatencyPolicy(1.0), ProbabilisticPolicy(0.3)
    )
    fused = default_policy(0.3)
    answers = [
        (reference.evaluate(TraceData(t, s)), fused.evaluate(TraceData(t, s)))
        for t, s in spans_by_trace.items()
    ]
    assert all(a == b for a, b in answers)
    assert {a for a, _ in answers} >= {None, 1.0, 0.3}
