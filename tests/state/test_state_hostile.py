"""Hostile values and classes, sampling, settings, and log-based events."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import procscope
from procscope.instrumentation.state import trace_state


class Explosive:
    """__eq__, __hash__ and __repr__ all raise; counts how often __eq__ was asked."""

    eq_calls = 0

    def __eq__(self, other: object) -> bool:
        type(self).eq_calls += 1
        raise RuntimeError("no comparing me")

    def __hash__(self) -> int:
        raise RuntimeError("no hashing me")

    def __repr__(self) -> str:
        raise RuntimeError("no printing me")


class Slow:
    """A repr that would print a huge text; only its bounded start may be recorded."""

    def __repr__(self) -> str:
        return "S" * 1_000_000


def test_hostile_values_recorded_without_calling_eq(recorder: Any) -> None:
    """Raising __eq__/__repr__ values: compared by identity, shown by their (no) fields
    without calling their __repr__."""

    @trace_state(name="box")
    class Box:
        def __init__(self) -> None:
            self.item: Any = Explosive()

        def swap(self) -> None:
            self.item = Explosive()

        def same(self) -> None:
            self.item = self.item  # the same object: no change

    box = Box()
    box.swap()
    box.same()
    assert Explosive.eq_calls == 0
    (change,) = recorder.changes("box#1")
    assert change["procscope.state.values"] == ("Explosive()",)


def test_huge_and_recursive_values_bounded(recorder: Any) -> None:
    """A huge repr is cut, a self-containing list does not recurse, a big list is not copied."""

    @trace_state(name="heap")
    class Heap:
        def __init__(self) -> None:
            self.slow: Any = None
            self.loop: list[Any] = []
            self.big = list(range(5000))

        def fill(self) -> None:
            self.slow = Slow()
            self.loop.append(self.loop)
            self.big.append(1)

    Heap().fill()
    (change,) = recorder.changes("heap#1")
    values = dict(zip(change["procscope.state.fields"], change["procscope.state.values"]))
    assert len(values["slow"]) <= 256
    assert values["loop"].startswith("[[")
    assert len(values["big"]) <= 256
    # 5000 items is over max_items (1000): compared by length only, no per-index detail.
    assert "big" in change["procscope.state.fields"]
    assert not any(p.startswith("big[") for p in change["procscope.state.change.paths"])


def test_unhashable_dataclass_and_eq_class_as_objects(recorder: Any) -> None:
    """Objects whose class defines __eq__ (so no __hash__) are traced like any other."""

    @trace_state(name="eq")
    class Equal:
        def __init__(self) -> None:
            self.v = 1

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("never asked")

        __hash__ = None  # type: ignore[assignment]

        def bump(self) -> None:
            self.v += 1

    Equal().bump()
    assert recorder.changes("eq#1")[0]["procscope.state.values"] == ("2",)


def test_class_with_own_setattr_and_frozen_errors(recorder: Any) -> None:
    """A class's own __setattr__ still runs; its exceptions reach the caller unchanged."""

    @trace_state(name="guarded")
    class Guarded:
        def __init__(self) -> None:
            self.level = 0

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "level" and value < 0:
                raise ValueError("negative level")
            super().__setattr__(name, value * 10 if name == "level" else value)

        def set(self, value: int) -> None:
            self.level = value

    guarded = Guarded()
    guarded.set(2)
    assert guarded.level == 20
    with pytest.raises(ValueError, match="negative level"):
        guarded.set(-1)
    changes = recorder.changes("guarded#1")
    assert len(changes) == 1
    assert changes[0]["procscope.state.values"] == ("20",)  # what was stored, not given


def test_unsampled_trace_records_nothing_then_resyncs(recorder: Any) -> None:
    """In an unsampled trace nothing is recorded; the next recorded change adds a snapshot."""
    account = trace_state(type("Acct", (), {"add": lambda self: setattr(self, "n", self.n + 1)})())
    account.n = 0
    recorder.clear()
    unsampled = NonRecordingSpan(
        SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0))
    )
    with trace.use_span(unsampled):
        account.add()
        account.add()
    assert recorder.spans() == []
    account.add()
    events = recorder.events()
    assert [e["event"] for e in events] == ["procscope.state.change", "procscope.state.snapshot"]
    assert events[1]["procscope.state.snapshot.reason"] == "resync"
    assert events[1]["procscope.state.values"] == ("3",)


def test_sample_rate_zero_makes_no_span(recorder: Any, live_settings: Any) -> None:
    """With the live sample rate at 0, no root span is made for a change."""

    @trace_state
    class Tally:
        def __init__(self) -> None:
            self.n = 0

        def inc(self) -> None:
            self.n += 1

    live_settings.sample_rate = 0.0
    tally = Tally()
    tally.inc()
    assert recorder.spans() == []
    assert tally.n == 1


def test_snapshot_every_setting(make_recorder: Any, monkeypatch: Any) -> None:
    """snapshot_every=3: a periodic snapshot after every third change; a bad value warns."""
    recorder = make_recorder(snapshot_every=3)

    @trace_state(name="periodic")
    class P:
        def __init__(self) -> None:
            self.n = 0

        def inc(self) -> None:
            self.n += 1

    p = P()
    for _ in range(7):
        p.inc()
    reasons = [
        e["procscope.state.snapshot.reason"] for e in recorder.events("procscope.state.snapshot")
    ]
    assert reasons == ["start", "periodic", "periodic"]
    monkeypatch.setenv("PROCSCOPE_STATE_SNAPSHOT_EVERY", "zero")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_recorder()
    messages = [str(w.message) for w in caught if w.category is procscope.SettingWarning]
    assert len(messages) == 1 and "PROCSCOPE_STATE_SNAPSHOT_EVERY" in messages[0]


def test_log_based_events(make_recorder: Any) -> None:
    """events="log": each event is a LogRecord with event_name, in the span's context."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemory
    except ImportError:  # SDKs before 1.39 had only the older name
        from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemory

    log_exporter = InMemory()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    recorder = make_recorder(events="log", logger_provider=logger_provider)

    @trace_state(name="logged")
    class L:
        def __init__(self) -> None:
            self.n = 0

        def inc(self) -> None:
            self.n += 1

    with recorder.tracer.start_as_current_span("work") as span:
        L().inc()
    records = [r.log_record for r in log_exporter.get_finished_logs()]
    assert [r.event_name for r in records] == ["procscope.state.snapshot", "procscope.state.change"]
    assert records[1].attributes["procscope.state.values"] == ("1",)
    assert records[1].trace_id == span.get_span_context().trace_id
    assert [s.name for s in recorder.spans()] == ["work"]
    assert recorder.spans()[0].events == ()


def test_internal_error_never_reaches_the_program(
    monkeypatch: Any, recorder: Any, caplog: Any
) -> None:
    """With errors not raised (as in production), a failure of ours is logged once only."""
    from procscope.instrumentation.state import _scalars, _tracker

    monkeypatch.delenv("PROCSCOPE_RAISE_INTERNAL_ERRORS")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in procscope")

    # The two ways a change event is made (one scalar field; anything else).
    monkeypatch.setattr(_scalars, "add_event", broken)
    monkeypatch.setattr(_tracker, "_emit_change", broken)

    @trace_state(name="safe")
    class S:
        def __init__(self) -> None:
            self.n = 0

        def inc(self) -> int:
            self.n += 1
            return self.n

    s = S()
    with caplog.at_level(logging.WARNING, logger="procscope"):
        assert [s.inc() for _ in range(3)] == [1, 2, 3]
    assert s.n == 3
    assert sum("internal error" in r.getMessage() for r in caplog.records) == 1


def test_name_argument_and_procscope_name_agree(recorder: Any) -> None:
    """procscope.trace_state(obj, name=...) is the API's entry point too."""
    obj = type("Thing", (), {})()
    assert procscope.trace_state(obj, name="thing") is obj
    obj.colour = "red"
    assert recorder.changes("thing")[0]["procscope.state.values"] == ("'red'",)


_SENTINEL = object()


def _signature_zoo() -> type:
    """A class whose methods use every kind of parameter (a fresh class per call)."""

    class Zoo:
        def __init__(self) -> None:
            self.seen: Any = None

        def mixed(self, x, y=2, *rest, z, w=_SENTINEL, **extra):  # type: ignore[no-untyped-def]
            self.seen = (x, y, rest, z, w is _SENTINEL, extra)
            return self.seen

        def positional_only(self, x, /, y=[]):  # type: ignore[no-untyped-def]  # noqa: B006
            y.append(x)  # the shared default list, as in the plain function
            self.seen = list(y)
            return self.seen

        def keyword_only(this, *, k=3):  # type: ignore[no-untyped-def]  # noqa: N805
            this.seen = k
            return k

        def star_only(*args, **kwargs):  # type: ignore[no-untyped-def]
            args[0].seen = (args[1:], kwargs)
            return args[0].seen

        def clashing(self, _ps_func=1, id=5, Exception=6):  # type: ignore[no-untyped-def]  # noqa: N803
            self.seen = (_ps_func, id, Exception)
            return self.seen

    return Zoo


def test_methods_take_and_reject_arguments_exactly_as_before(recorder: Any) -> None:
    """Every parameter kind binds as in the plain class; wrong calls raise the same TypeError."""
    plain_class, traced_class = _signature_zoo(), trace_state(_signature_zoo())
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("mixed", (1,), {"z": 3}),
        ("mixed", (1, 2, 3, 4), {"z": 5, "w": 6, "q": 7}),
        ("mixed", (), {"x": 1, "z": 2}),
        ("positional_only", (1,), {}),
        ("positional_only", (2,), {}),
        ("positional_only", (1, [9]), {}),
        ("keyword_only", (), {"k": 9}),
        ("keyword_only", (), {}),
        ("star_only", (1, 2), {"u": 3}),
        ("clashing", (), {}),
        ("clashing", (7,), {"Exception": 1}),
        ("mixed", (), {}),
        ("mixed", (1,), {}),
        ("mixed", (1,), {"z": 1, "x": 2}),
        ("positional_only", (), {"x": 1}),
        ("keyword_only", (1,), {}),
        ("clashing", (1, 2, 3, 4), {}),
    ]
    plain, traced = plain_class(), traced_class()
    for method, args, kwargs in calls:
        outcomes = []
        for obj in (plain, traced):
            try:
                fresh = [list(a) if isinstance(a, list) else a for a in args]  # own copies
                outcomes.append(("returned", getattr(obj, method)(*fresh, **kwargs), obj.seen))
            except TypeError as error:
                outcomes.append(("TypeError", str(error), None))
        assert outcomes[0] == outcomes[1], (method, args, kwargs)
    assert [c["procscope.state.method"] for c in recorder.changes()][:3] == ["mixed"] * 3
