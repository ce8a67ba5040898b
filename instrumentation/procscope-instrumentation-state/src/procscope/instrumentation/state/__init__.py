"""procscope's state instrumentor: how long-lived objects' state changes, as OTel events.

The Python counterpart of recording a GenServer's state before and after each message::

    @procscope.trace_state                       # every instance
    class Account: ...

    procscope.trace_state(obj, name="alice", fields=["balance"])   # one object

Each call of a public method that changes the object records one
``procscope.state.change`` event (field, old and new value, per-key diffs of nested
containers) on the current span, or on a span made for it; a method that changes nothing
records nothing. Assignments from outside the methods are recorded too. A snapshot of the
whole state is recorded when tracing starts and every N changes, so that the trace DB can
rebuild the state at any instant. With the ``transitions`` library installed, every
transition of every state machine is recorded as well (see :mod:`._transitions`).

Recording is on while :class:`StateInstrumentor` is instrumented (``procscope.setup()``
does it at the levels ``full`` and ``states_only``); the classes stay patched otherwise,
with wrappers that only pass through. See docs/state.md.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _runtime
from ._patch import patch_class, trace_instance
from ._runtime import RT
from ._transitions import TransitionsInstrumentor
from .package import __version__, _instruments, _instruments_transitions

__all__ = ["StateInstrumentor", "TransitionsInstrumentor", "__version__", "trace_state"]

_logger = logging.getLogger("procscope")


class StateInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Switches state recording on and off (entry point ``procscope_state``).

    Keywords of :meth:`instrument` (each also an environment variable):
    ``tracer_provider``; ``snapshot_every`` (``PROCSCOPE_STATE_SNAPSHOT_EVERY``, default
    100 changes); ``events`` (``PROCSCOPE_STATE_EVENTS``: ``span``, the default, or ``log``
    for LogRecord events, with ``logger_provider``); ``max_depth`` and ``max_items``
    (``PROCSCOPE_STATE_MAX_DEPTH``/``_MAX_ITEMS``: how deep and how large nested
    containers are diffed, default 3 and 1000).
    """

    _owns_transitions = False

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from ._transitions import _Switch

        _runtime.configure(kwargs, __version__)
        RT.generation += 1
        RT.active = True
        _Switch.owns_runtime = False  # the runtime is this instrumentor's from now on
        self._instrument_transitions(kwargs)

    def _instrument_transitions(self, kwargs: dict[str, Any]) -> None:
        from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

        conflict = get_dependency_conflicts(_instruments_transitions)
        if conflict is not None:
            # As auto-launch does for a library that is absent: a debug line, no error.
            _logger.debug("procscope: transitions not recorded: %s", conflict)
            return
        transitions = TransitionsInstrumentor()
        if transitions.is_instrumented_by_opentelemetry:
            return
        transitions.instrument(skip_dep_check=True, tracer_provider=kwargs.get("tracer_provider"))
        type(self)._owns_transitions = True

    def _uninstrument(self, **kwargs: Any) -> None:
        RT.active = False
        if type(self)._owns_transitions:
            type(self)._owns_transitions = False
            transitions = TransitionsInstrumentor()
            if transitions.is_instrumented_by_opentelemetry:
                transitions.uninstrument()


def _fields_of(fields: Any) -> frozenset[str] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        return frozenset((fields,))
    if not isinstance(fields, Iterable):
        raise TypeError("procscope.trace_state: fields must be a list of attribute names")
    names = frozenset(fields)
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError("procscope.trace_state: fields must be a list of attribute names")
    return names


def trace_state(
    obj_or_class: Any = None,
    name: str | None = None,
    fields: Any = None,
) -> Any:
    """Record the state changes of an object, or of every instance of a class.

    ``@trace_state`` / ``@trace_state(name=..., fields=[...])`` on a class traces every
    instance from the end of its ``__init__`` (instances named ``name#1``, ``name#2``...,
    or ``Class#n``; ``procscope.name(obj, ...)`` renames one). ``trace_state(obj,
    name=..., fields=[...])`` traces one object from now on. Returns what it was given,
    unchanged (same class, same object). ``fields`` limits which attributes are state.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError("procscope.trace_state: name must be a non-empty string")
    field_set = _fields_of(fields)
    if obj_or_class is None:

        def decorate(target: Any) -> Any:
            return trace_state(target, name=name, fields=fields)

        return decorate
    if isinstance(obj_or_class, type):
        info = patch_class(obj_or_class, all_instances=True)
        if name is not None:
            info.name = name
        if field_set is not None:
            info.fields = field_set
        return obj_or_class
    return trace_instance(obj_or_class, name, field_set)
