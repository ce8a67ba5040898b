"""``asyncio``: Queue, LifoQueue and PriorityQueue (patched on ``asyncio.Queue``).

``put()`` and ``get()`` are coroutines that end in ``put_nowait()``/``get_nowait()``, so
those two make the spans and move the carrier (the side channel of :mod:`._side`, as for
``queue``). The context attached at a get belongs to the task that called it (a ContextVar
per task): other tasks never see it, and tasks the consumer creates while handling the
message inherit it.

``get()`` itself is not wrapped. A wrapper coroutine (a frame, a context variable set and
reset, a clock read) cost every get about 0.4 us, most of a message's cost at rate 0.01,
to learn one thing needed only for a sampled message: when the wait began (its block
time). A get that waits appends its future to the queue's ``_getters`` deque first, so
that deque is one of ours (:class:`_Getters`, made at ``__init__``) whose ``append``
notes the time in the waiting task's context, and releases the previous message's
context before the wait, as the wrapper did. A get that does not wait pays nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
from typing import Any

from procscope.core import flight as _flight
from procscope.core.guard import log_internal_error

from . import _core, _side
from ._carry import Hop
from ._core import SYSTEM_ASYNCIO, attached_get, record, release
from ._flight import _NUMBERS, ASYNC_GET, ASYNC_PUT, kept
from ._flight import note as _flight_note
from ._naming import install_defaults, note_site
from ._patching import Patcher, original

_time_ns = time.time_ns
_ident = threading.get_ident
_carries = _side.carries

# When the current task's get() began to wait, for the block time of its get_nowait()
# (read and cleared there; 0: no wait noted).
_get_started: contextvars.ContextVar[int] = contextvars.ContextVar(
    "procscope_messaging_get_started", default=0
)
_deque_append = collections.deque.append
_deque_remove = collections.deque.remove
_instrumented = False


class _Getters(collections.deque):  # type: ignore[type-arg]
    """An ``asyncio.Queue``'s ``_getters``: a deque whose ``append`` (only ``get()``
    about to wait calls it) notes when the wait began. Copied or pickled, a plain deque:
    nothing of procscope's travels with a queue."""

    __slots__ = ()

    def append(self, getter: Any) -> None:
        if _instrumented:
            try:
                if attached_get() is not None:
                    release()
                _get_started.set(_time_ns())
            except Exception:  # noqa: BLE001
                log_internal_error()
        _deque_append(self, getter)

    def remove(self, getter: Any) -> None:
        # get() cancelled while it waited: that wait's start must not become the block
        # time of a later get_nowait() of this task.
        if _instrumented and _get_started.get():
            _get_started.set(0)
        _deque_remove(self, getter)

    def __reduce__(self) -> Any:
        return collections.deque, (list(self), self.maxlen)


def _own_getters(queue: Any) -> None:
    """Give ``queue`` a :class:`_Getters` in place of the empty deque its __init__ made."""
    getters = getattr(queue, "_getters", None)
    if type(getters) is collections.deque and not getters and getters.maxlen is None:
        object.__setattr__(queue, "_getters", _Getters())


def _task_name() -> str | None:
    """The running asyncio task's name (None outside a task): the end of a message in
    the trace DB is then ``process:pid/Task-6``, not the loop's thread shared by all."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
    return None if task is None else task.get_name()


def _methods(orig_init: Any, orig_put_nowait: Any, orig_get_nowait: Any,
             orig_task_done: Any) -> dict[str, Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        orig_init(self, *args, **kwargs)
        try:
            _own_getters(self)
            note_site(self)
        except Exception:  # noqa: BLE001
            log_internal_error()

    def put_nowait(self: Any, item: Any) -> Any:
        if not record():
            add = _flight.append
            if add is not None:  # the flight recorder (see _flight.note), inline: no call
                codes = self._procscope_flight
                code = None if codes is None else codes[ASYNC_PUT]
                if code is None or self._procscope_internal:
                    _flight_note(self, ASYNC_PUT, item)
                else:
                    _flight.count()
                    add((_time_ns(), code, _ident(), item if type(item) in _NUMBERS
                         else kept(item)))
            return orig_put_nowait(self, item)
        span = carrier = None
        try:
            if not self._procscope_internal and type(item) is not Hop:
                prof = _core.profile(self, SYSTEM_ASYNCIO, "put", "send")
                span, carrier = _core.runtime.start_send(prof, item, None, True)
                task = _task_name() if span is not None else None
                if task is not None:
                    span.set_attribute(_core.TASK_NAME, task)
                if carrier is not None:
                    lock = prof.lock  # (the side map's lock, kept with the profile)
                    if lock is None:
                        lock = prof.lock = _side.lock_of(self)
                    _side.add(self, item, carrier, lock)
        except Exception:  # noqa: BLE001
            log_internal_error()
        if span is None:
            return orig_put_nowait(self, item)
        try:
            result = orig_put_nowait(self, item)
        except BaseException as exc:
            if carrier is not None:
                _side.discard(self, item, carrier)
            _core.end_with(span, exc)
            raise
        try:
            span.end()  # (a record's PendingSend and an SDK span alike)
        except Exception:  # noqa: BLE001
            log_internal_error()
        return result

    def get_nowait(self: Any) -> Any:
        if attached_get() is not None:
            release()
        # The side map (a sampled message in flight) is read as an attribute whose class
        # default is None, never through self.__dict__ (see _naming.CLASS_DEFAULTS). No
        # clock read without one: nothing can be put between here and the take below.
        started = _get_started.get()
        if started:
            _get_started.set(0)
        elif self._procscope_side is not None:
            started = _time_ns()
        item = orig_get_nowait(self)
        if self._procscope_side is not None:
            if not _carries(self, item):
                if _flight.append is not None:
                    _flight_note(self, ASYNC_GET, item)
                return item
            try:
                prof = _core.profile(self, SYSTEM_ASYNCIO, "get", "receive", queue_type=False)
                lock = prof.lock
                if lock is None:
                    lock = prof.lock = _side.lock_of(self)
                carrier = _side.take(self, item, isinstance(self, asyncio.LifoQueue), lock)
                if carrier is not None:
                    _core.receive(carrier, prof, started, task=_task_name())
                elif _flight.append is not None:
                    _flight_note(self, ASYNC_GET, item)
            except Exception:  # noqa: BLE001
                log_internal_error()
            return item
        add = _flight.append
        if add is not None:  # (as in put_nowait)
            codes = self._procscope_flight
            code = None if codes is None else codes[ASYNC_GET]
            if code is None or self._procscope_internal:
                _flight_note(self, ASYNC_GET, item)
            else:
                _flight.count()
                add((_time_ns(), code, _ident(), item if type(item) in _NUMBERS else kept(item)))
        return item

    def task_done(self: Any) -> Any:
        if attached_get() is not None:
            release()
        return orig_task_done(self)

    methods = {"__init__": __init__, "put_nowait": put_nowait, "get_nowait": get_nowait,
               "task_done": task_done}
    originals = (orig_init, orig_put_nowait, orig_get_nowait, orig_task_done)
    for function, source in zip(methods.values(), originals):
        function.__doc__ = source.__doc__
        function.__wrapped__ = source  # type: ignore[attr-defined]
    return methods


class AsyncioQueues:
    """Instruments ``asyncio.Queue`` (and so LifoQueue and PriorityQueue)."""

    def __init__(self) -> None:
        self._patcher = Patcher()

    def instrument(self) -> None:
        cls = asyncio.Queue
        install_defaults(cls)
        methods = _methods(
            original(cls, "__init__"),
            original(cls, "put_nowait"),
            original(cls, "get_nowait"),
            original(cls, "task_done"),
        )
        for attribute, replacement in methods.items():
            self._patcher.patch(cls, attribute, replacement)
        global _instrumented
        _instrumented = True

    def uninstrument(self) -> None:
        global _instrumented
        _instrumented = False
        self._patcher.restore()
