"""``asyncio``: Queue, LifoQueue and PriorityQueue (patched on ``asyncio.Queue``).

``put()`` and ``get()`` are coroutines that end in ``put_nowait()``/``get_nowait()``, so
those two make the spans and move the carrier (the side channel of :mod:`._side`, as for
``queue``). ``get()`` is wrapped only to note when the wait began (the consumer's block
time) and to release the previous message's context before waiting. The context attached
at a get belongs to the task that called it (a ContextVar per task): other tasks never
see it, and tasks the consumer creates while handling the message inherit it.
"""

from __future__ import annotations

import asyncio
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

# When the current task's pending get() began, for the block time of its get_nowait().
_get_started: contextvars.ContextVar[int] = contextvars.ContextVar(
    "procscope_messaging_get_started", default=0
)


def _task_name() -> str | None:
    """The running asyncio task's name (None outside a task): the end of a message in
    the trace DB is then ``process:pid/Task-6``, not the loop's thread shared by all."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
    return None if task is None else task.get_name()


def _release() -> None:
    try:
        release()
    except Exception:  # noqa: BLE001
        log_internal_error()


def _methods(orig_init: Any, orig_put_nowait: Any, orig_get_nowait: Any, orig_get: Any,
             orig_task_done: Any) -> dict[str, Any]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        orig_init(self, *args, **kwargs)
        try:
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
                span, carrier = _core.start_send(prof, item, local=True)
                task = _task_name() if span is not None else None
                if task is not None:
                    span.set_attribute(_core.TASK_NAME, task)
                if carrier is not None:
                    _side.add(self, item, carrier)
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
        _core.end_with(span, None)
        return result

    def get_nowait(self: Any) -> Any:
        if attached_get() is not None:
            _release()
        # The side map (a sampled message in flight) is read as an attribute whose class
        # default is None, never through self.__dict__ (see _naming.CLASS_DEFAULTS). No
        # clock read without one: nothing can be put between here and the take below.
        started = _get_started.get() or (_time_ns() if self._procscope_side is not None else 0)
        item = orig_get_nowait(self)
        if self._procscope_side is not None:
            try:
                carrier = _side.take(self, item, isinstance(self, asyncio.LifoQueue))
                if carrier is not None:
                    _core.receive(carrier, _core.profile(self, SYSTEM_ASYNCIO, "get", "receive",
                                                         queue_type=False), started,
                                  task=_task_name())
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

    async def get(self: Any) -> Any:
        if attached_get() is not None:
            _release()
        token = _get_started.set(_time_ns())
        try:
            return await orig_get(self)
        finally:
            _get_started.reset(token)

    def task_done(self: Any) -> Any:
        if attached_get() is not None:
            _release()
        return orig_task_done(self)

    methods = {"__init__": __init__, "put_nowait": put_nowait, "get_nowait": get_nowait,
               "get": get, "task_done": task_done}
    originals = (orig_init, orig_put_nowait, orig_get_nowait, orig_get, orig_task_done)
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
            original(cls, "get"),
            original(cls, "task_done"),
        )
        for attribute, replacement in methods.items():
            self._patcher.patch(cls, attribute, replacement)

    def uninstrument(self) -> None:
        self._patcher.restore()
