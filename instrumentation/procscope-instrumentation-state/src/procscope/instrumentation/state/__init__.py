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

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._patch import patch_class, trace_instance
from .package import __version__

if TYPE_CHECKING:
    from ._instrumentor import StateInstrumentor, TransitionsInstrumentor

__all__ = ["StateInstrumentor", "TransitionsInstrumentor", "__version__", "trace_state"]


def __getattr__(name: str) -> Any:
    # Imported at first use: their base class costs tens of milliseconds of imports
    # that procscope.setup(), which switches the plugin through ._switch, does not need.
    if name in ("StateInstrumentor", "TransitionsInstrumentor"):
        from . import _instrumentor

        return getattr(_instrumentor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
