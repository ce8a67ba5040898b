"""Locks that a fork child can take whatever the order of the at-fork hooks.

A fork copies every lock as it is: one that another thread of the parent held at the fork
stays held in the child, where that thread does not exist. Resetting locks in an
``os.register_at_fork(after_in_child=...)`` hook is not enough: hooks run in the order they
were registered, so a program's hook registered before procscope was imported (or a span
made inside another library's hook) runs first and would wait for ever on the copy.

So the lock itself knows the process it belongs to: the first use in a new process gets a
fresh lock. Used where the lock is taken off the hot paths (warnings, names, counters);
hot paths check ``lock.locked()`` first and the pid only when it is taken.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # (not typing's: procscope run's launcher imports this module)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class ForkSafeLock:
    """A ``with``-able lock (``threading.Lock`` or ``RLock``) that is new in each process."""

    __slots__ = ("_by_pid", "_factory")

    def __init__(self, factory: Callable[[], Any] = threading.Lock) -> None:
        self._factory = factory
        # pid -> lock. dict.setdefault is atomic under the GIL: two threads of a child that
        # both find no lock of their process still end up sharing one.
        self._by_pid: dict[int, Any] = {os.getpid(): factory()}

    def current(self) -> Any:
        """This process's lock (the parent's copy is never used in a child)."""
        pid = os.getpid()
        lock = self._by_pid.get(pid)
        if lock is None:
            lock = self._by_pid.setdefault(pid, self._factory())
            for other in list(self._by_pid):  # the ancestors' copies: of no use here
                if other != pid:
                    self._by_pid.pop(other, None)
        return lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return bool(self.current().acquire(blocking, timeout))

    def release(self) -> None:
        self.current().release()

    def __enter__(self) -> bool:
        return bool(self.current().acquire())

    def __exit__(self, *exc_info: object) -> None:
        self.current().release()


def held_in_forked_child(lock: Any, owner_pid: int) -> bool:
    """True when ``lock`` is taken and was made in another process (a fork's copy).

    For hot paths: ``lock.locked()`` first, a getpid only when it is taken. A lock taken in
    a fork child by a thread of the parent will never be released: the caller replaces it.
    """
    return bool(lock.locked()) and owner_pid != os.getpid()
