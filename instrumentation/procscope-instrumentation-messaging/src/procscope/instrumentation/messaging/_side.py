"""The side channel that carries a sampled message's carrier beside it in an in-process queue.

The consumer must get the very object the producer put, and a PriorityQueue must order
exactly as before, so the message itself is never wrapped. Instead each queue keeps, as
an attribute of its own (set with object.__setattr__, never through its ``__dict__``: see
``_naming.CLASS_DEFAULTS``), a map from ``id(message)`` to the carriers of the sampled messages
in flight, each kept with the message itself (so that the id cannot be reused by another
object while the entry lives, and the entry is checked by identity at get).

Unsampled messages add no entry, and the map is removed with its last entry, so a get on
a queue with no sampled message in flight (the normal unsampled case) reads one attribute
(the class default, None).
The map lives and dies with the queue.
The same object put several times at once keeps its carriers in put order; a get takes
the oldest (the newest for a LIFO queue).
"""

from __future__ import annotations

import _queue
import os
import queue as _queue_module
import threading
from typing import Any

from procscope.core.forksafe import held_in_forked_child

from ._naming import SIDE_ATTR, SIDE_LOCK_ATTR, own, set_own

_own_attr = object.__getattribute__  # (as own(), without its call: on every sampled put/get)

_delattr = object.__delattr__

# Guards the making of a thread queue's side lock, and the maps of the other queues:
# asyncio's (one event loop's tasks share them; a thread lock in their __dict__ would
# make copy.deepcopy of one fail) and any that cannot hold a lock (a class with __slots__).
_fallback_lock = threading.Lock()
_fallback_pid = os.getpid()
# The queues whose side map has a lock of its own (see lock_of): the threads' queues,
# which deepcopy and pickle refuse anyway (they hold locks).
_THREAD_QUEUES = (_queue_module.Queue, _queue.SimpleQueue)


def lock_of(queue: Any) -> Any:
    """The lock that guards ``queue``'s side map: for a thread queue, one of the queue's
    own, made with its first sampled message; for the others, one shared lock.

    Not the queue's mutex, which ``queue.Queue`` takes in every put and get: its consumers
    contend for it, and taking it once more for each sampled message (under the GIL, a
    thread that holds it can be switched out) made a sampled put wait about 0.2 ms in a
    four-thread pipeline, and its get 0.1 ms, against 2 and 20 us with a lock of its own.

    Callers may keep it, and pass it back to add() and take(), which ask again when it is
    taken: a kept lock may be a fork's copy, held by a thread of the parent.
    """
    if not isinstance(queue, _THREAD_QUEUES):
        return _shared_lock()
    lock = _own_lock(queue)
    return lock if lock is not None else _new_side_lock(queue)


def _own_lock(queue: Any) -> Any:
    """The queue's own side lock; None before its first sampled message, or when it is a
    fork's copy that a thread of the parent held."""
    try:
        held = _own_attr(queue, SIDE_LOCK_ATTR)
    except AttributeError:
        return None
    if held is None or held_in_forked_child(held[0], held[1]):
        return None
    return held[0]


def _new_side_lock(queue: Any) -> Any:
    shared = _shared_lock()
    with shared:
        lock = _own_lock(queue)
        if lock is not None:
            return lock  # (made by another thread meanwhile)
        lock = threading.Lock()
        try:
            set_own(queue, SIDE_LOCK_ATTR, (lock, os.getpid()))
        except (AttributeError, TypeError):  # no room for it (__slots__): the shared one
            return shared
        return lock


def _shared_lock() -> Any:
    """The shared lock, made again in a fork child whose copy a parent's thread held."""
    if held_in_forked_child(_fallback_lock, _fallback_pid):
        _new_fallback_lock()
    return _fallback_lock


def _new_fallback_lock() -> None:
    """In a fork child, the copy of a lock a parent's thread held is never released.

    Made new at its first use found taken, not (only) in an at-fork hook: a program's hook
    registered before procscope was imported can put on a queue before ours runs.
    """
    global _fallback_lock, _fallback_pid
    if _fallback_pid != os.getpid():
        _fallback_lock = threading.Lock()
        _fallback_pid = os.getpid()


def add(queue: Any, item: object, carrier: tuple[Any, ...], lock: Any = None) -> None:
    with lock if lock is not None and not lock.locked() else lock_of(queue):
        try:
            side = _own_attr(queue, SIDE_ATTR)
        except AttributeError:
            side = None
        if side is None:
            side = {}
            set_own(queue, SIDE_ATTR, side)
        entries = side.get(id(item))
        if entries is None:
            side[id(item)] = [(item, carrier)]
        else:
            entries.append((item, carrier))


def discard(queue: Any, item: object, carrier: tuple[Any, ...]) -> None:
    """Take back an entry whose put failed (queue.Full, an exception in __lt__...)."""
    with lock_of(queue):
        side = own(queue, SIDE_ATTR)
        if not side:
            return
        entries = side.get(id(item))
        if not entries:
            return
        for index, (held, held_carrier) in enumerate(entries):
            if held is item and held_carrier is carrier:
                del entries[index]
                break
        if not entries:
            del side[id(item)]
            if not side:
                _delattr(queue, SIDE_ATTR)


def carries(queue: Any, item: object) -> bool:
    """Whether ``item`` may have come with a carrier: its id has an entry in the map.

    Read without the lock. While a queue holds any sampled message, every get asks, and
    nearly every answer is no: taking the queue's mutex for each (the mutex its consumers
    already contend for inside ``get``) cost a four-thread pipeline at rate 0.01 a third
    of its time. A dict look-up is atomic, and an entry is added before its message is
    put, so a get that took the message sees the entry; "no" needs no lock, a "yes" is
    checked again under it by :func:`take`."""
    try:
        side = _own_attr(queue, SIDE_ATTR)
    except AttributeError:
        return False
    return bool(side) and id(item) in side


def in_flight(queue: Any) -> int:
    """How many sampled messages ``queue`` holds now (entries in its map)."""
    try:
        _own_attr(queue, SIDE_ATTR)
    except AttributeError:
        return 0
    with lock_of(queue):
        try:
            side = _own_attr(queue, SIDE_ATTR)
        except AttributeError:
            return 0
        return sum(len(entries) for entries in side.values()) if side else 0


def take(queue: Any, item: object, newest: bool = False, lock: Any = None) -> Any:
    """The carrier that came with ``item``, removed from the map; None if it had none.
    Asked only once :func:`carries` said yes (the callers ask it first, without the lock)."""
    with lock if lock is not None and not lock.locked() else lock_of(queue):
        try:
            side = _own_attr(queue, SIDE_ATTR)
        except AttributeError:
            side = None
        if not side:
            return None
        entries = side.get(id(item))
        if not entries:
            return None
        index = len(entries) - 1 if newest else 0
        held, carrier = entries[index]
        if held is not item:  # cannot happen while entries hold their items; be safe
            return None
        del entries[index]
        if not entries:
            del side[id(item)]
            if not side:
                # Gone with its last entry, so that a get reads the class default again.
                _delattr(queue, SIDE_ATTR)
        return carrier
