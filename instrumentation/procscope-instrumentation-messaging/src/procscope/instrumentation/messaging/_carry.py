"""Carrying a sampled message's context through pickle, to another process.

A sampled message is pickled as ``_restore(carrier, message)``: unpickling calls
:func:`_restore`, which notes the carrier for the receiving call to pick up and returns
the message itself. So the receiver gets exactly what it would have got without
procscope (same type and value), whether or not procscope is *instrumenting* there; it
needs only to be *importable* there, which holds for every process that
``multiprocessing`` starts for the program (fork copies the parent; spawn and forkserver
children get the parent's ``sys.path``). Connections to programs that ``multiprocessing``
did not start (``multiprocessing.connection.Client``/``Listener``) might not have it, so
they are never wrapped: only pipes made by ``multiprocessing.Pipe()`` and queues are.

Pickling ``_restore(carrier, message)`` pickles the message exactly where it would have
been pickled (at once for a pipe, a SimpleQueue and a Manager proxy; in the feeder thread
for ``multiprocessing.Queue``), so a message that cannot be pickled fails with the same
exception, raised at the same place.
"""

from __future__ import annotations

import threading
from typing import Any

from ._naming import own, set_own


class _Slot(threading.local):
    # A class-level default: reading it on a thread that never unpickled a carried
    # message builds no AttributeError.
    carrier: tuple[Any, ...] | None = None


# The carrier of the message unpickled last in this thread (one slot, overwritten):
# the receiving call clears it before it unpickles and reads it right after (the hot
# receiving calls in _mp.py do both inline, on ``slot``).
slot = _slot = _Slot()


def _restore(carrier: tuple[Any, ...], message: Any) -> Any:
    """Unpickling a carried message: note its carrier, give back the message itself."""
    _slot.carrier = carrier
    return message


def clear() -> None:
    _slot.carrier = None


def take() -> tuple[Any, ...] | None:
    carrier = _slot.carrier
    if carrier is not None:
        _slot.carrier = None
    return carrier


class Carried:
    """A sampled message on its way into a pickle; never seen by user code."""

    __slots__ = ("carrier", "message")

    def __init__(self, message: Any, carrier: tuple[Any, ...]) -> None:
        self.message = message
        self.carrier = carrier

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.carrier, self.message))


def _rebuild_hop(message: Any, carrier: tuple[Any, ...]) -> Hop:
    return Hop(message, carrier, outbound=False)


class Hop:
    """A message through a Manager queue: it stays wrapped in the manager's own queue.

    The manager process only stores the message and hands it back, so the carrier must
    survive that stay: pickled by the producer it arrives in the manager as a ``Hop``
    (``outbound``), and pickled again by the manager for the consumer it reduces to
    :func:`_restore`, so the consumer gets the plain message whatever it runs.
    """

    __slots__ = ("carrier", "message", "outbound")

    def __init__(self, message: Any, carrier: tuple[Any, ...], outbound: bool = True) -> None:
        self.message = message
        self.carrier = carrier
        self.outbound = outbound

    def __reduce__(self) -> tuple[Any, ...]:
        if self.outbound:
            return (_rebuild_hop, (self.message, self.carrier))
        return (_restore, (self.carrier, self.message))

    def __lt__(self, other: Any) -> Any:
        # A manager-side PriorityQueue (registered by the program) still orders by message.
        return self.message < (other.message if type(other) is Hop else other)

    def __gt__(self, other: Any) -> Any:
        return self.message > (other.message if type(other) is Hop else other)


def rebuild_with_names(rebuild: Any, args: tuple[Any, ...], names: dict[str, Any]) -> Any:
    """Unpickling a queue, pipe end or proxy that carries its procscope names along."""
    obj = rebuild(*args)
    try:
        # (set as attributes, not through obj.__dict__: see _naming.CLASS_DEFAULTS)
        if "_procscope_internal" not in names and own(obj, "_procscope_internal"):
            set_own(obj, "_procscope_internal", False)
        for key, value in names.items():
            set_own(obj, key, value)
    except Exception:  # noqa: BLE001 -- names are a nicety; the object must arrive
        pass
    return obj


def rebuild_from_state(cls: Any, state: Any, names: dict[str, Any]) -> Any:
    """Unpickling a multiprocessing queue: as ``copyreg`` would, plus its names."""
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    try:
        for key, value in names.items():
            set_own(obj, key, value)
    except Exception:  # noqa: BLE001
        pass
    return obj
