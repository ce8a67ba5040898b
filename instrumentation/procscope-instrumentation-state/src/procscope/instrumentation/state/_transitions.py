"""Every transition of the ``transitions`` state-machine library, with nothing decorated.

``Transition.execute`` runs once per candidate transition of a triggered event: it checks
the conditions, then changes the model's state. Wrapping it (and the ``async`` version of
``transitions.extensions.asyncio``) records one ``procscope.state.transition`` event per
attempt: trigger, source, destination, machine, and whether the conditions passed. A
passed transition also carries the model's new state in the same ``fields``/``values``
attributes as a change event, so that ``state_at`` rebuilds a model's state without the
model being decorated.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from typing import Any

from procscope.core import shared_state
from procscope.core.guard import log_internal_error
from procscope.core.naming import get_name

from . import _semconv as sc
from ._diff import freeze, value_repr
from ._runtime import RT, begin
from ._tracker import TRACKERS, Tracker, class_name, lock_of

_logger = logging.getLogger("procscope")

# Trackers of models that nobody traced with trace_state: name and counter only.
_MODEL_TRACKERS: dict[int, Tracker] = {}


class _Switch:
    on = False
    owns_runtime = False  # switched the state runtime on itself (used without StateInstrumentor)


def _model_tracker(model: Any) -> Tracker | None:
    tracker = TRACKERS.get(id(model))
    if tracker is not None:
        return tracker
    key = id(model)
    tracker = _MODEL_TRACKERS.get(key)
    if tracker is not None:
        return tracker
    tracker = Tracker(model, None, None, None)
    try:
        weakref.finalize(model, _MODEL_TRACKERS.pop, key, None)
    except TypeError:
        return None  # no weak references: recorded under the class name, no counter
    return _MODEL_TRACKERS.setdefault(key, tracker)


def _machine_name(machine: Any) -> str:
    name = getattr(machine, "name", "") or ""
    name = str(name).rstrip(": ").strip()
    return name or type(machine).__qualname__


def _state_name(state: Any) -> str:
    name = getattr(state, "name", state)
    return str(getattr(name, "name", name))


def _record(
    transition: Any, event_data: Any, source: str, passed: bool | None, start_ns: int
) -> None:
    model = event_data.model
    machine = event_data.machine
    trigger = str(getattr(event_data.event, "name", "?"))
    tracker = _model_tracker(model)
    if tracker is not None:
        name = tracker.name_of(model)
        seq = next(tracker.counter)
        # After the snapshot under this name (as a change event's epoch): a model renamed
        # since its snapshot starts again at 0, with no snapshot to build on.
        epoch = tracker.epoch_label if name == tracker.last_name else f"{name}/0"
    else:
        name = get_name(model) or type(model).__qualname__
        seq = 0
        epoch = f"{name}/0"
    dest = transition.dest
    attributes: dict[str, Any] = {
        sc.OBJECT: name,
        sc.CLASS: class_name(type(model)),
        sc.METHOD: trigger,
        sc.EPOCH: epoch,
        sc.SEQ: seq,
        sc.TRIGGER: trigger,
        sc.SOURCE: source,
        sc.DESTINATION: _state_name(dest) if dest is not None else source,
        sc.MACHINE: _machine_name(machine),
    }
    if passed is not None:
        attributes[sc.CONDITIONS_PASSED] = passed
    # The model's state attribute after the attempt (unchanged when the conditions
    # failed): readers rebuild the model's state from transitions alone.
    field = str(getattr(machine, "model_attribute", "state"))
    attributes[sc.FIELDS] = (field,)
    attributes[sc.FIELD_SEQS] = (seq,)
    if shared_state.settings().capture_content:
        try:
            value = getattr(model, field)
        except Exception:  # noqa: BLE001 -- a model whose attribute access raises
            value = dest if passed else source
        attributes[sc.VALUES] = (value_repr(freeze(value, 1, 16), field),)
    target = begin(
        lambda: (
            f"{type(model).__qualname__}.{trigger}",
            {sc.OBJECT: name, sc.CLASS: attributes[sc.CLASS], sc.MACHINE: attributes[sc.MACHINE]},
        ),
        start_ns,
    )
    if target is None:
        return
    try:
        target.add(sc.EVENT_TRANSITION, attributes)
    finally:
        target.end()


def _source_of(event_data: Any, transition: Any) -> str:
    state = getattr(event_data, "state", None)
    return _state_name(state) if state is not None else str(transition.source)


def _wrap_execute(orig: Any) -> Any:
    @functools.wraps(orig)
    def execute(self: Any, event_data: Any) -> Any:
        if not (_Switch.on and RT.active):
            return orig(self, event_data)
        start_ns = time.time_ns()
        try:
            source = _source_of(event_data, self)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
            return orig(self, event_data)
        result = orig(self, event_data)
        try:
            _record(self, event_data, source, bool(result), start_ns)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
        return result

    execute._procscope_original = orig  # type: ignore[attr-defined]
    return execute


def _wrap_async_execute(orig: Any) -> Any:
    @functools.wraps(orig)
    async def execute(self: Any, event_data: Any) -> Any:
        if not (_Switch.on and RT.active):
            return await orig(self, event_data)
        start_ns = time.time_ns()
        try:
            source = _source_of(event_data, self)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
            return await orig(self, event_data)
        result = await orig(self, event_data)
        try:
            _record(self, event_data, source, bool(result), start_ns)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
        return result

    execute._procscope_original = orig  # type: ignore[attr-defined]
    return execute


# True while this thread is inside a machine's add_model: the subclasses' add_model
# (nesting, asyncio, locking, diagrams) call Machine's, and only the outermost records.
_adding = threading.local()


def _record_start(machine: Any, model: Any, start_ns: int) -> None:
    """The model's first snapshot (its initial state), when a machine takes it on.

    Without it, ``state_at`` knows nothing of a model before its first transition. A
    model that is also traced with ``trace_state`` has taken its own snapshot already.
    """
    if id(model) in TRACKERS:
        return
    tracker = _model_tracker(model)
    if tracker is None:  # no weak references: no counter to keep snapshots apart
        return
    name = tracker.name_of(model)
    model_class = class_name(type(model))
    machine_name = _machine_name(machine)
    target = begin(
        lambda: (
            f"{type(machine).__qualname__}.add_model",
            {sc.OBJECT: name, sc.CLASS: model_class, sc.MACHINE: machine_name},
        ),
        start_ns,
    )
    if target is None:
        return  # not sampled: its transitions still say where it came from
    try:
        field = str(getattr(machine, "model_attribute", "state"))
        with lock_of(tracker):
            seq = next(tracker.counter)
            if name != tracker.last_name:
                tracker.epoch = 0  # snapshot numbers count per name, as in _tracker
            tracker.epoch += 1
            tracker.last_name = name
            tracker.epoch_label = f"{name}/{tracker.epoch}"
            attributes: dict[str, Any] = {
                sc.OBJECT: name,
                sc.CLASS: model_class,
                sc.EPOCH: tracker.epoch_label,
                sc.SEQ: seq,
                sc.SNAPSHOT_REASON: "start",
                sc.FIELDS: (field,),
            }
        if shared_state.settings().capture_content:
            try:
                value = getattr(model, field)
            except Exception:  # noqa: BLE001 -- a model whose attribute access raises
                value = "?"
            attributes[sc.VALUES] = (value_repr(freeze(value, 1, 16), field),)
        target.add(sc.EVENT_SNAPSHOT, attributes)
    finally:
        target.end()


def _wrap_add_model(orig: Any) -> Any:
    @functools.wraps(orig)
    def add_model(self: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        if not (_Switch.on and RT.active) or getattr(_adding, "busy", False):
            return orig(self, model, *args, **kwargs)
        start_ns = time.time_ns()
        try:
            known: set[int] | None = {id(m) for m in self.models}
        except Exception:  # noqa: BLE001 -- a machine without the models list
            known = None
        _adding.busy = True
        try:
            result = orig(self, model, *args, **kwargs)
        finally:
            _adding.busy = False
        if known is not None:
            try:
                for added in list(self.models):
                    if id(added) not in known:
                        _record_start(self, added, start_ns)
            except Exception:  # noqa: BLE001 -- the guard logs it
                log_internal_error()
        return result

    add_model._procscope_original = orig  # type: ignore[attr-defined]
    return add_model


def _machine_classes() -> list[Any]:
    """Machine and each class of the library's extensions that defines its own add_model."""
    import importlib

    from transitions.core import Machine

    found = [Machine]
    for module in ("nesting", "asyncio", "locking", "diagrams"):
        try:
            loaded = importlib.import_module(f"transitions.extensions.{module}")
        except Exception:  # noqa: BLE001 -- optional extensions (diagrams needs graphviz)
            continue
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, Machine)
                and "add_model" in value.__dict__
                and value not in found
            ):
                found.append(value)
    return found


def _targets() -> list[tuple[Any, Any]]:
    """(class, wrapper factory) for each Transition class that defines its own execute."""
    from transitions.core import Transition

    found: list[tuple[Any, Any]] = [(Transition, _wrap_execute)]
    try:
        from transitions.extensions.asyncio import AsyncTransition

        found.append((AsyncTransition, _wrap_async_execute))
    except Exception:  # noqa: BLE001 -- the asyncio extension is optional
        pass
    return found


def is_on() -> bool:
    return _Switch.on


def instrument(**kwargs: Any) -> None:
    """Wrap every transition's ``execute`` and every machine's ``add_model``; switches the
    state runtime on too when nothing else did (used without the state instrumentor)."""
    if RT.tracer is None:
        from . import _runtime
        from .package import __version__

        _runtime.configure(kwargs, __version__)
        RT.active = True
        _Switch.owns_runtime = True
    for cls, factory in _targets():
        current = cls.__dict__.get("execute")
        if current is not None and not hasattr(current, "_procscope_original"):
            cls.execute = factory(current)
    for cls in _machine_classes():
        current = cls.__dict__.get("add_model")
        if current is not None and not hasattr(current, "_procscope_original"):
            cls.add_model = _wrap_add_model(current)
    _Switch.on = True


def uninstrument(**_: Any) -> None:
    """Put the originals back."""
    _Switch.on = False
    if _Switch.owns_runtime:
        _Switch.owns_runtime = False
        RT.active = False
    for cls, _factory in _targets():
        current = cls.__dict__.get("execute")
        original = getattr(current, "_procscope_original", None)
        if original is not None:
            cls.execute = original
    for cls in _machine_classes():
        current = cls.__dict__.get("add_model")
        original = getattr(current, "_procscope_original", None)
        if original is not None:
            cls.add_model = original
