"""The transitions library: every transition recorded with nothing decorated."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import procscope


class Order:
    """A plain model: paid decides whether it may ship."""

    def __init__(self) -> None:
        self.paid = False

    def is_paid(self) -> bool:
        return self.paid


def _machine(model: Any, name: str = "orders") -> Any:
    from transitions import Machine

    return Machine(
        model=model,
        name=name,
        states=["new", "shipped", "delivered"],
        initial="new",
        transitions=[
            {"trigger": "ship", "source": "new", "dest": "shipped", "conditions": "is_paid"},
            {"trigger": "deliver", "source": "shipped", "dest": "delivered"},
        ],
    )


def test_transitions_with_conditions_recorded(recorder: Any) -> None:
    """Each attempt: trigger, source, destination, machine, and whether conditions passed."""
    order = procscope.name(Order(), "order-1")
    _machine(order)
    assert order.ship() is False
    order.paid = True
    assert order.ship() is True
    assert order.deliver() is True
    assert order.state == "delivered"
    events = recorder.events("procscope.state.transition", "order-1")
    summary = [
        (
            e["procscope.state.transition.trigger"],
            e["procscope.state.transition.source"],
            e["procscope.state.transition.destination"],
            e["procscope.state.transition.conditions_passed"],
            e["procscope.state.values"],
        )
        for e in events
    ]
    assert summary == [
        ("ship", "new", "shipped", False, ("'new'",)),
        ("ship", "new", "shipped", True, ("'shipped'",)),
        ("deliver", "shipped", "delivered", True, ("'delivered'",)),
    ]
    assert {e["procscope.state.transition.machine"] for e in events} == {"orders"}
    assert {e["span"] for e in events} == {"Order.ship", "Order.deliver"}


def test_transition_inside_a_span_and_with_trace_state(recorder: Any) -> None:
    """Inside a span, transitions are its events; a traced model also records its fields."""
    order = procscope.trace_state(Order(), name="order-2")
    _machine(order)
    order.paid = True
    recorder.clear()
    with recorder.tracer.start_as_current_span("handle"):
        order.ship()
    (span,) = recorder.spans()
    names = [e.name for e in span.events]
    assert "procscope.state.transition" in names
    # The machine sets model.state: the traced model records that assignment too.
    change = recorder.changes("order-2")[0]
    assert change["procscope.state.fields"] == ("state",)
    assert change["procscope.state.values"] == ("'shipped'",)


def test_machine_as_its_own_model(recorder: Any) -> None:
    """A Machine subclass that is its own model (the common pattern) is recorded too."""
    from transitions import Machine

    class Light(Machine):
        def __init__(self) -> None:
            Machine.__init__(
                self,
                states=["off", "on"],
                initial="off",
                transitions=[["flip", "off", "on"], ["flip", "on", "off"]],
            )

    light = procscope.name(Light(), "light")
    light.flip()
    light.flip()
    events = recorder.events("procscope.state.transition", "light")
    assert [e["procscope.state.transition.destination"] for e in events] == ["on", "off"]


def test_async_machine_recorded(recorder: Any) -> None:
    """transitions.extensions.asyncio: async transitions are recorded the same way."""
    from transitions.extensions.asyncio import AsyncMachine

    model = procscope.name(Order(), "async-order")
    model.paid = True
    AsyncMachine(
        model=model,
        states=["new", "shipped"],
        initial="new",
        transitions=[{"trigger": "ship", "source": "new", "dest": "shipped"}],
    )
    assert asyncio.run(model.ship()) is True
    events = recorder.events("procscope.state.transition", "async-order")
    assert [e["procscope.state.transition.conditions_passed"] for e in events] == [True]


def test_uninstrument_restores_transitions(recorder: Any) -> None:
    """Uninstrumenting puts Transition.execute and every add_model back as they were."""
    from transitions.core import Machine, Transition
    from transitions.extensions.nesting import HierarchicalMachine

    from procscope.instrumentation.state import StateInstrumentor

    patched = (Transition.execute, Machine.add_model, HierarchicalMachine.add_model)
    assert all(hasattr(f, "_procscope_original") for f in patched)
    StateInstrumentor().uninstrument()
    try:
        assert Transition.execute is patched[0]._procscope_original
        assert Machine.__dict__["add_model"] is patched[1]._procscope_original
        assert HierarchicalMachine.__dict__["add_model"] is patched[2]._procscope_original
    finally:
        StateInstrumentor().instrument(tracer_provider=recorder.provider)


def test_a_machine_taking_a_model_on_snapshots_its_initial_state(recorder: Any) -> None:
    """One start snapshot per model, after the machine set its initial state; the
    transitions after it build on it (same epoch)."""
    order = procscope.name(Order(), "order-3")
    _machine(order)
    order.paid = True
    order.ship()
    (snapshot,) = recorder.events("procscope.state.snapshot", "order-3")
    assert snapshot["procscope.state.snapshot.reason"] == "start"
    assert snapshot["procscope.state.fields"] == ("state",)
    assert snapshot["procscope.state.values"] == ("'new'",)
    assert snapshot["span"] == "Machine.add_model"
    (transition,) = recorder.events("procscope.state.transition", "order-3")
    assert transition["procscope.state.epoch"] == snapshot["procscope.state.epoch"] == "order-3/1"
    assert transition["procscope.state.seq"] > snapshot["procscope.state.seq"]


def test_nested_machine_snapshots_once_with_the_nested_initial_state(recorder: Any) -> None:
    """HierarchicalMachine.add_model calls Machine.add_model: one snapshot, taken after the
    nested initial state is entered."""
    from transitions.extensions.nesting import HierarchicalMachine

    job = procscope.name(Order(), "job")
    HierarchicalMachine(
        model=job,
        states=["idle", {"name": "busy", "children": ["a", "b"], "initial": "a"}],
        initial="busy",
    )
    (snapshot,) = recorder.events("procscope.state.snapshot", "job")
    assert snapshot["procscope.state.values"] == ("'busy_a'",)
    assert snapshot["span"] == "HierarchicalMachine.add_model"


def test_a_model_traced_with_trace_state_takes_only_its_own_snapshot(recorder: Any) -> None:
    """trace_state snapshots the whole object when tracing starts; the machine adds none."""
    order = procscope.trace_state(Order(), name="order-4")
    _machine(order)
    snapshots = recorder.events("procscope.state.snapshot", "order-4")
    assert [s["procscope.state.snapshot.reason"] for s in snapshots] == ["start"]
    assert "paid" in snapshots[0]["procscope.state.fields"]


def test_a_model_named_after_its_machine_starts_a_new_epoch(recorder: Any) -> None:
    """Named after the snapshot (taken as Class#n): its transitions do not claim that
    snapshot's epoch under the new name."""
    order = Order()
    _machine(order)
    procscope.name(order, "late-name")
    order.paid = True
    order.ship()
    (transition,) = recorder.events("procscope.state.transition", "late-name")
    assert transition["procscope.state.epoch"] == "late-name/0"


def test_plain_classes_work_without_transitions(tmp_path: Any) -> None:
    """Where transitions is not installed, the instrumentor still traces plain classes."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["transitions"] = None  # as if not installed: import fails
        import importlib.metadata as md
        real = md.version
        def version(name):
            if name == "transitions":
                raise md.PackageNotFoundError(name)
            return real(name)
        md.version = version
        import opentelemetry.util._importlib_metadata as om
        om.version = version
        import opentelemetry.instrumentation.dependencies as deps
        deps.version = version
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import procscope
        from procscope.instrumentation.state import StateInstrumentor, TransitionsInstrumentor
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        StateInstrumentor().instrument(tracer_provider=provider)
        assert not TransitionsInstrumentor().is_instrumented_by_opentelemetry
        @procscope.trace_state
        class C:
            def __init__(self):
                self.n = 0
            def inc(self):
                self.n += 1
        C().inc()
        names = [e.name for s in exporter.get_finished_spans() for e in s.events]
        print(names)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['procscope.state.snapshot', 'procscope.state.change']"
    assert result.stderr == ""
