"""``queue``: Queue, LifoQueue and PriorityQueue (Python classes), and SimpleQueue (C).

Queue's ``put``, ``get``, ``task_done`` and ``__init__`` are patched on the class itself,
so queues made before ``instrument()`` are traced too, and LifoQueue and PriorityQueue
(which only override ``_put``/``_get``) with them; ``put_nowait``/``get_nowait`` call
``put``/``get``. ``queue.SimpleQueue`` is the C type ``_queue.SimpleQueue``, whose
methods cannot be replaced: while instrumented, ``queue.SimpleQueue`` names a subclass
with traced methods, so SimpleQueues made after ``instrument()`` through ``queue.`` are
traced and older ones (or ones made through ``_queue`` or an earlier
``from queue import SimpleQueue``) are not.
"""

from __future__ import annotations

import _queue
import queue
import threading
import time
from typing import Any

from procscope.core import _flight_triggers
from procscope.core import flight as _flight
from procscope.core.guard import log_internal_error

from . import _core, _side
from ._carry import Hop
from ._core import (
    SYSTEM_QUEUE,
    TAIL_KEY,
    attached_get,
    context_get,
    live,
    record,
    record_root,
    release,
    state_dict,
)
from ._flight import _NUMBERS, QUEUE_GET, QUEUE_PUT, kept
from ._flight import note as _flight_note
from ._naming import install_defaults, note_site
from ._patching import Patcher, original

_time_ns = time.time_ns
_ident = threading.get_ident
_carries = _side.carries
_context_get = context_get
_live = live
_state_dict = state_dict


def _send(q: Any, item: object, put: Any, block: bool, timeout: float | None) -> Any:
    """The sampled path of a put: producer span, carrier beside the message, then put."""
    span = carrier = None
    try:
        if not q._procscope_internal and type(item) is not Hop:
            # (a Hop is a Manager queue's message, traced by the proxies already)
            prof = _core.profile(q, SYSTEM_QUEUE, "put", "send")
            span, carrier = _core.runtime.start_send(prof, item, None, True)
            if carrier is not None:
                lock = prof.lock
                if lock is None:
                    lock = prof.lock = _side.lock_of(q)
                _side.add(q, item, carrier, lock)
    except Exception:  # noqa: BLE001 -- ours failed: deliver the message untraced
        log_internal_error()
    if span is None:
        return put(q, item, block, timeout)
    try:
        result = put(q, item, block, timeout)
    except BaseException as exc:
        if carrier is not None:
            _side.discard(q, item, carrier)
        _core.end_with(span, exc)
        raise
    try:
        span.end()
    except Exception:  # noqa: BLE001
        log_internal_error()
    return result


def _receive(q: Any, item: object, started: int, newest: bool) -> None:
    try:
        prof = _core.profile(q, SYSTEM_QUEUE, "get", "receive", queue_type=False)
        lock = prof.lock
        if lock is None:
            lock = prof.lock = _side.lock_of(q)
        carrier = _side.take(q, item, newest, lock)
        if carrier is not None:
            _core.receive(carrier, prof, started)
        elif _flight.append is not None:
            _flight_note(q, QUEUE_GET, item)
    except Exception:  # noqa: BLE001
        log_internal_error()


def _put_failed(q: Any, exc: Exception) -> None:
    """An unsampled put raised (a PriorityQueue's items that do not compare, a subclass's
    _put; queue.Full is flow control): the flight recorder's trigger, named as its span
    would be."""
    try:
        if q._procscope_internal:
            return
        name = _core.profile(q, SYSTEM_QUEUE, "put", "send").span_name
    except Exception:  # noqa: BLE001
        log_internal_error()
        return
    _flight_triggers.operation_failed(name, exc)


def _make_queue_methods(orig_init: Any, orig_put: Any, orig_get: Any, orig_task_done: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        orig_init(self, *args, **kwargs)
        try:
            note_site(self)
        except Exception:  # noqa: BLE001
            log_internal_error()

    def put(self: Any, item: Any, block: bool = True, timeout: float | None = None) -> Any:
        # The gate's two commonest "no" answers are given here, without a call into it
        # (this put is the hottest path the instrumentor has): the current context is the
        # very object whose span it last found unsampled, or there is no context at all
        # and the rate is 0.
        ctx = _context_get()
        if ctx:
            last = _core.last_context
            if (last[0] is not ctx or last[1]) and record():
                return _send(self, item, orig_put, block, timeout)
        elif (_live.sample_rate > 0.0 or _state_dict.get(TAIL_KEY)) and record_root():
            # (an empty context: no span, no suppression; the draw for a new trace)
            return _send(self, item, orig_put, block, timeout)
        add = _flight.append
        if add is not None:  # the flight recorder (see _flight.note), inline: no call
            codes = self._procscope_flight
            code = None if codes is None else codes[QUEUE_PUT]
            if code is None or self._procscope_internal:
                _flight_note(self, QUEUE_PUT, item)
            else:
                _flight.count()
                add((_time_ns(), code, _ident(), item if type(item) in _NUMBERS else kept(item)))
        try:  # (no cost without an exception from 3.11; a failed put is a flight trigger)
            return orig_put(self, item, block, timeout)
        except Exception as exc:
            if add is not None:
                _put_failed(self, exc)
            raise

    def get(self: Any, block: bool = True, timeout: float | None = None) -> Any:
        if attached_get() is not None:
            release()
        # No clock read while no sampled message is in flight here (the unsampled case):
        # the queue has a side map of its own only while it holds entries; otherwise the
        # read finds the class default, None (never self.__dict__: see _naming).
        started = _time_ns() if self._procscope_side is not None else 0
        item = orig_get(self, block, timeout)
        if self._procscope_side is not None and _carries(self, item):
            _receive(self, item, started, isinstance(self, queue.LifoQueue))
            return item
        add = _flight.append
        if add is not None:  # (as in put)
            codes = self._procscope_flight
            code = None if codes is None else codes[QUEUE_GET]
            if code is None or self._procscope_internal:
                _flight_note(self, QUEUE_GET, item)
            else:
                _flight.count()
                add((_time_ns(), code, _ident(), item if type(item) in _NUMBERS else kept(item)))
        return item

    def task_done(self: Any) -> Any:
        if attached_get() is not None:
            release()
        return orig_task_done(self)

    for function, source in ((__init__, orig_init), (put, orig_put), (get, orig_get),
                             (task_done, orig_task_done)):
        function.__doc__ = source.__doc__
        function.__wrapped__ = source  # type: ignore[attr-defined,union-attr]
    return __init__, put, get, task_done


class _State:
    enabled = False


_state = _State()


class SimpleQueue(_queue.SimpleQueue):
    """``queue.SimpleQueue`` with traced put/get (installed as ``queue.SimpleQueue``)."""

    # (declared for type checkers; install_defaults below adds the others)
    _procscope_internal: bool = False
    _procscope_side: Any = None

    def __init__(self) -> None:
        try:
            note_site(self)
        except Exception:  # noqa: BLE001
            log_internal_error()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        # Internal first: an executor's work queue must not pay for the gate.
        if not _state.enabled or self._procscope_internal:
            return _queue.SimpleQueue.put(self, item, block, timeout)
        if not record():
            if _flight.append is not None:
                _flight_note(self, QUEUE_PUT, item)
            return _queue.SimpleQueue.put(self, item, block, timeout)
        return _send(self, item, _queue.SimpleQueue.put, block, timeout)  # type: ignore[no-any-return]

    def put_nowait(self, item: Any) -> None:
        return self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if attached_get() is not None:
            release()
        started = _time_ns() if self._procscope_side is not None else 0
        item = _queue.SimpleQueue.get(self, block, timeout)
        if self._procscope_side is not None and _carries(self, item):
            _receive(self, item, started, False)
        elif _flight.append is not None and _state.enabled:
            _flight_note(self, QUEUE_GET, item)
        return item

    def get_nowait(self) -> Any:
        return self.get(False)


install_defaults(SimpleQueue)
SimpleQueue.__module__ = "queue"
SimpleQueue.__qualname__ = "SimpleQueue"


class ThreadQueues:
    """Instruments the ``queue`` module."""

    def __init__(self) -> None:
        self._patcher = Patcher()

    def instrument(self) -> None:
        cls = queue.Queue
        install_defaults(cls)
        init, put, get, task_done = _make_queue_methods(
            original(cls, "__init__"),
            original(cls, "put"),
            original(cls, "get"),
            original(cls, "task_done"),
        )
        self._patcher.patch(cls, "__init__", init)
        self._patcher.patch(cls, "put", put)
        self._patcher.patch(cls, "get", get)
        self._patcher.patch(cls, "task_done", task_done)
        if queue.SimpleQueue is _queue.SimpleQueue:
            self._patcher.patch(queue, "SimpleQueue", SimpleQueue)
        _state.enabled = True

    def uninstrument(self) -> None:
        _state.enabled = False
        self._patcher.restore()
