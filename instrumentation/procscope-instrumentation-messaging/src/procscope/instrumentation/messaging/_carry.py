"""Carrying a sampled message's context (and an unsampled one's sender stamp, see
:class:`~._pickler.StampingPickler`) through pickle, to another process.

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

import os
import struct
import threading
import weakref
from typing import Any

from . import _core
from ._naming import own, set_own


class _Slot(threading.local):
    # A class-level default: reading it on a thread that never unpickled a carried
    # message builds no AttributeError.
    carrier: tuple[Any, ...] | bytes | None = None


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


def take() -> tuple[Any, ...] | bytes | None:
    """The carrier (a tuple) or the sender stamp (bytes) unpickled last, taken."""
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


# An unsampled message's sender stamp, when the flight recorder is on in the sender
# (see _flight). It travels after the message's own pickle, which pickle.loads reads up
# to its STOP opcode and no further: a receiver without procscope gets the message from
# the same bytes, and the pickle holds no reference to procscope (a global costs an
# import lookup on each side, about 1 us). Laid out as: the sending thread's name
# (UTF-8, only when it is not "MainThread"), _THREAD (sender pid, the thread's native id
# or 0, the name's length: _MAIN for none, _UNKNOWN for a thread that ended before its
# message was pickled), then _SENT (the time it was sent, _MAGIC). 19 bytes from the
# main thread: a pipe's buffer holds nearly as many messages as before. Every pickle
# ends with STOP ('.'), never with _MAGIC's last byte. The receiver keeps these bytes as
# they came (in the carrier slot: bytes, where a sampled message's carrier is a tuple),
# and reads them only at a dump (read_stamp).
_MAGIC = b"\xb5\x17"
_THREAD = struct.Struct("<IIB")
_SENT = struct.Struct("<q2s")
_TAIL = _THREAD.size + _SENT.size
_pack_sent = _SENT.pack
_LENGTH_AT = _THREAD.size - 1 - _TAIL  # (the name's length, from the end)
_MAIN, _UNKNOWN, _LONGEST = 0, 255, 254
MAIN_THREAD = "MainThread"
# A sending thread's part of its stamps (name and _THREAD), by its ident: (a weak
# reference to the thread, its name then, the bytes). Made again when the thread (an
# ident is given again to a later thread) or its name is another; emptied in a fork
# child (another pid, another native id).
_threads: dict[int, tuple[Any, str, bytes]] = {}


def _thread_part(ident: int) -> bytes:
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is None:  # (the thread has ended)
        return _THREAD.pack(_core._pid, 0, _UNKNOWN)
    name = thread.name
    known = _threads.get(ident)
    if known is not None and known[0]() is thread and known[1] is name:
        return known[2]
    # The thread that forked keeps its parent's native_id in the child (threading does not
    # renew it): its own was read at the fork.
    native = _forked[1] if thread is _forked[0]() else thread.native_id
    # (a native id is a 32-bit tid on Linux; wider elsewhere, it is cut, not refused)
    native = (native or 0) & 0xFFFF_FFFF
    if name == MAIN_THREAD:
        part = _THREAD.pack(_core._pid, native, _MAIN)
    else:
        encoded = name.encode("utf-8", "replace")[:_LONGEST]
        part = encoded + _THREAD.pack(_core._pid, native, len(encoded))
    if len(_threads) > 1024:
        _threads.clear()
    _threads[ident] = (weakref.ref(thread), name, part)
    return part


class Stamped(tuple):  # type: ignore[type-arg]
    """``(message, thread ident, time sent)``: an unsampled message on its way to a
    multiprocessing queue or pipe, with what its stamp is made of. A tuple, made without
    a Python ``__init__``: the caller's thread pays for little more than the tuple. The
    thread's name and native id are looked up when :class:`~._pickler.StampingPickler` pickles it,
    which for ``multiprocessing.Queue`` is the feeder thread's work, not the caller's."""

    __slots__ = ()

    def stamp(self) -> bytes:
        return _thread_part(self[1]) + _pack_sent(self[2], _MAGIC)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by a pickler other than ours (the queue was uninstrumented between the
        # put and the feeder's pickling): the way a sampled message travels.
        return (_restore, (self.stamp(), self[0]))


def read_stamp(stamp: bytes) -> tuple[int, int, int, str | None]:
    """(time sent, sender pid, sender thread native id or 0, its name or None)."""
    pid, native, length = _THREAD.unpack_from(stamp, len(stamp) - _TAIL)
    sent = _SENT.unpack_from(stamp, len(stamp) - _SENT.size)[0]
    if length == _MAIN:
        return sent, pid, native, MAIN_THREAD
    if length == _UNKNOWN:
        return sent, pid, native, None
    return sent, pid, native, stamp[:length].decode("utf-8", "replace")


def _no_thread() -> None:
    return None


# (a weak reference to the thread that forked this process, its native id in this process)
_forked: tuple[Any, int] = (_no_thread, 0)


def _after_fork_in_child() -> None:
    global _forked
    _threads.clear()  # (their stamps name the parent's pid and thread ids)
    thread = threading._active.get(threading.get_ident())  # type: ignore[attr-defined]
    if thread is not None:  # (run by the thread that forked, in the child)
        _forked = (weakref.ref(thread), threading.get_native_id())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _rebuild_hop(message: Any, carrier: tuple[Any, ...] | bytes) -> Hop:
    return Hop(message, carrier, outbound=False)


class Hop:
    """A message through a Manager queue: it stays wrapped in the manager's own queue.
    (Its carrier: a sampled message's, or an unsampled one's sender stamp.)

    The manager process only stores the message and hands it back, so the carrier must
    survive that stay: pickled by the producer it arrives in the manager as a ``Hop``
    (``outbound``), and pickled again by the manager for the consumer it reduces to
    :func:`_restore`, so the consumer gets the plain message whatever it runs.
    """

    __slots__ = ("carrier", "message", "outbound")

    def __init__(
        self, message: Any, carrier: tuple[Any, ...] | bytes, outbound: bool = True
    ) -> None:
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

