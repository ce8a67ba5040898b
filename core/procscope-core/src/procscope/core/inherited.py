"""What a fork child inherits of its parent's recordings, let go of a little at a time.

A fork child starts with copies of its parent's flight recorder ring (up to
``flight_memory``, 32 MiB by default: about 170,000 records), of its recorder's buffer
of records not yet delivered (up to 32,768), of the batch processors' queues of spans
(up to 8,192 each) and of the tail sampler's buffered traces. They are the parent's to
deliver; the child starts empty. Emptying them at the fork (``deque.clear()``) freed every record
on the spot: each free writes to memory shared with the parent since the fork, so the
kernel copied page after page, and the child's start waited for it. A parent with a full
ring made each fork child cost 27 ms more (``multiprocessing`` fork start+join at rate 0:
6.9 ms with an empty ring, 33.7 ms with a full one).

So the child puts new, empty ones in their place and keeps the inherited ones here,
untouched (their pages stay shared with the parent, at no cost to either). The child's
own periodic threads (the flight recorder's disk mirror, the recorder's drain) then free
:data:`CHUNK` records per tick: a few milliseconds of a long-lived child's first seconds,
nothing at all for a child that exits through ``os._exit`` first (as ``multiprocessing``'s
do). A child with neither thread running keeps them until it exits.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Records freed per tick of a periodic thread (every 100-200 ms): about 1-2 ms of work.
CHUNK = 5_000

# Inherited containers (deques, dicts, lists), oldest first. Only this process's threads
# touch the list after the fork: the at-fork hooks (one thread) add, periodic threads take.
_kept: list[Any] = []


def keep(container: Any) -> None:
    """Keep ``container`` (a deque, dict or list inherited at a fork, no longer used by
    this process) to free later."""
    if container:
        _kept.append(container)


def _take_one(container: Any) -> None:
    if isinstance(container, collections.deque):
        container.popleft()
    elif isinstance(container, dict):
        container.popitem()
    else:
        container.pop()


def release(limit: int = CHUNK) -> int:
    """Free up to ``limit`` kept items (each take is atomic: two threads releasing at
    once free different items). Returns how many were freed."""
    freed = 0
    while _kept and freed < limit:
        container = _kept[0]
        try:
            for _ in range(min(limit - freed, len(container))):
                _take_one(container)
                freed += 1
        except (IndexError, KeyError):  # (emptied meanwhile by the other thread)
            pass
        if not container:
            try:
                _kept.remove(container)
            except ValueError:
                pass
    return freed


def pending() -> int:
    """Items still kept (for tests and diagnostics)."""
    return sum(len(container) for container in list(_kept))
