"""``multiprocessing``: Queue, JoinableQueue, SimpleQueue, Pipe connections, Manager queues.

All are Python classes, patched on the class (so queues made before ``instrument()`` or
through a context, ``get_context("spawn").Queue()``, are traced too). A sampled message
travels as :class:`~._carry.Carried` (or :class:`~._carry.Hop` through a Manager), which
unpickles to the message itself; see :mod:`._carry`. Queues, pipe ends and proxies take
their procscope names along when they are pickled to a child process.

Connections are traced only when made by ``multiprocessing.Pipe()`` after
``instrument()`` from the program's own code: multiprocessing's own connections (Pool,
Manager, resource sharer) carry other APIs' traffic, and ``Client``/``Listener``
connections may lead to a program without procscope.
"""

from __future__ import annotations

import inspect
import multiprocessing.connection as mp_connection
import multiprocessing.queues as mp_queues
import multiprocessing.reduction as mp_reduction
import time
from types import MethodType
from typing import Any

from procscope.core import _flight_triggers
from procscope.core import flight as _flight
from procscope.core.guard import log_internal_error
from procscope.core.post_import import when_imported

from . import _carry, _core, _pickler
from . import _flight as _flight_module
from ._core import (
    SYSTEM_MANAGER,
    SYSTEM_MP_PIPE,
    SYSTEM_MP_QUEUE,
    TAIL_KEY,
    attached_get,
    context_get,
    live,
    record,
    record_root,
    release,
    state_dict,
)
from ._flight import (
    MANAGER_GET,
    MANAGER_GET_STAMPED,
    MP_QUEUE_GET,
    MP_QUEUE_GET_STAMPED,
    MP_QUEUE_PUT,
    PIPE_RECV,
    PIPE_RECV_STAMPED,
    PIPE_SEND,
)
from ._flight import note as _flight_note
from ._flight import note_received as _flight_received
from ._flight import send_stamped as _flight_send
from ._flight import send_through_manager as _flight_manager_send
from ._naming import (
    DEFAULT_NAME_ATTR,
    PIPE_ATTR,
    PIPE_FACTORIES,
    get_name,
    install_defaults,
    name_of,
    names_state,
    note_site,
    own,
    set_own,
)
from ._patching import Patcher, original

_time_ns = time.time_ns
_context_get = context_get
_live = live
_state_dict = state_dict
_slot = _carry.slot
_PROXY_QUEUE_TYPES = frozenset(("Queue", "JoinableQueue"))
_PROXY_PUTS = frozenset(("put", "put_nowait"))
_PROXY_GETS = frozenset(("get", "get_nowait"))


def _send_failed(target: Any, system: str, operation: str, exc: Exception) -> None:
    """An unsampled send (a Pipe send, a SimpleQueue put) raised, with the recorder on:
    its trigger, named as the send's span would be (_flight_triggers.operation_failed)."""
    try:
        name = _core.profile(target, system, operation, "send").span_name
    except Exception:  # noqa: BLE001
        log_internal_error()
        return
    _flight_triggers.operation_failed(name, exc)


def _start(system: str, operation: str, target: Any, item: Any,
           size: int | None = None) -> tuple[Any, Any]:
    """(span, carrier) for a sampled send, or (None, None) if ours failed."""
    try:
        prof = _core.profile(target, system, operation, "send")
        return _core.runtime.start_send(prof, item, size, False)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001
        log_internal_error()
        return None, None


def _call_traced(span: Any, function: Any, *args: Any) -> Any:
    try:
        result = function(*args)
    except BaseException as exc:
        _core.end_with(span, exc)
        raise
    try:
        span.end()  # (a record's PendingSend and an SDK span alike: end_with(span, None))
    except Exception:  # noqa: BLE001
        log_internal_error()
    return result


def _receive(carrier: Any, system: str, operation: str, target: Any, started: int,
             item: Any, destination: str | None = None, size: int | None = None) -> None:
    try:
        prof = _core.profile(target, system, operation, "receive", queue_type=False)
        _core.receive(carrier, prof, started, size, destination)
    except Exception:  # noqa: BLE001
        log_internal_error()


# --- queues -----------------------------------------------------------------------------------

def _queue_put(orig_put: Any) -> Any:
    def put(self: Any, obj: Any, block: bool = True, timeout: float | None = None) -> Any:
        # (our attributes are read as attributes with class defaults, never through
        # self.__dict__, which would slow the object's own methods: see _naming)
        if self._procscope_internal:
            return orig_put(self, obj, block, timeout)
        # The gate's two commonest "no" answers inline, as in queue.Queue.put (_threadq).
        ctx = _context_get()
        if ctx:
            last = _core.last_context
            if (last[0] is ctx and not last[1]) or not record():
                if _flight.append is not None:  # (the flight recorder: see _flight)
                    obj = _flight_send(self, MP_QUEUE_PUT, obj)
                return orig_put(self, obj, block, timeout)
        elif not ((_live.sample_rate > 0.0 or _state_dict.get(TAIL_KEY)) and record_root()):
            # (an empty context: no span, no suppression; the draw for a new trace)
            if _flight.append is not None:
                obj = _flight_send(self, MP_QUEUE_PUT, obj)
            return orig_put(self, obj, block, timeout)
        span, carrier = _start(SYSTEM_MP_QUEUE, "put", self, obj)
        if span is None:
            return orig_put(self, obj, block, timeout)
        message = obj if carrier is None else _carry.Carried(obj, carrier)
        return _call_traced(span, orig_put, self, message, block, timeout)

    put.__wrapped__ = orig_put  # type: ignore[attr-defined]
    return put


def _queue_get(orig_get: Any) -> Any:
    # Explicit parameters, not *args/**kwargs (which cost ~0.2 us per call to pack and
    # unpack); the carrier slot is cleared and read inline (two calls fewer).
    def get(self: Any, block: bool = True, timeout: float | None = None) -> Any:
        if attached_get() is not None:
            release()
        slot = _slot
        if slot.carrier is not None:
            slot.carrier = None
        started = _time_ns()
        obj = orig_get(self, block, timeout)
        carrier = slot.carrier
        if carrier is not None:
            slot.carrier = None
            if type(carrier) is not bytes:
                _receive(carrier, SYSTEM_MP_QUEUE, "get", self, started, obj)
            elif _flight.append is not None:  # (an unsampled message's sender stamp)
                _flight_received(self, MP_QUEUE_GET_STAMPED, obj, carrier)
        elif _flight.append is not None:
            _flight_note(self, MP_QUEUE_GET, obj)
        return obj

    get.__wrapped__ = orig_get  # type: ignore[attr-defined]
    return get


def _simple_get(orig_get: Any) -> Any:
    """multiprocessing.SimpleQueue.get, which takes no arguments."""
    def get(self: Any) -> Any:
        if attached_get() is not None:
            release()
        slot = _slot
        if slot.carrier is not None:
            slot.carrier = None
        started = _time_ns()
        obj = orig_get(self)
        carrier = slot.carrier
        if carrier is not None:
            slot.carrier = None
            if type(carrier) is not bytes:
                _receive(carrier, SYSTEM_MP_QUEUE, "get", self, started, obj)
            elif _flight.append is not None:  # (an unsampled message's sender stamp)
                _flight_received(self, MP_QUEUE_GET_STAMPED, obj, carrier)
        elif _flight.append is not None:
            _flight_note(self, MP_QUEUE_GET, obj)
        return obj

    get.__wrapped__ = orig_get  # type: ignore[attr-defined]
    return get


def _simple_put(orig_put: Any) -> Any:
    def put(self: Any, obj: Any) -> Any:
        if self._procscope_internal:
            return orig_put(self, obj)
        if not record():
            if _flight.append is not None:
                obj = _flight_send(self, MP_QUEUE_PUT, obj)
                try:  # (a SimpleQueue pickles in put: no cost without an exception, 3.11+)
                    return orig_put(self, obj)
                except Exception as exc:
                    _send_failed(self, SYSTEM_MP_QUEUE, "put", exc)
                    raise
            return orig_put(self, obj)
        span, carrier = _start(SYSTEM_MP_QUEUE, "put", self, obj)
        if span is None:
            return orig_put(self, obj)
        message = obj if carrier is None else _carry.Carried(obj, carrier)
        return _call_traced(span, orig_put, self, message)

    put.__wrapped__ = orig_put  # type: ignore[attr-defined]
    return put


def _task_done(orig_task_done: Any) -> Any:
    def task_done(self: Any) -> Any:
        if attached_get() is not None:
            release()
        return orig_task_done(self)

    task_done.__wrapped__ = orig_task_done  # type: ignore[attr-defined]
    return task_done


def _init(orig_init: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        orig_init(self, *args, **kwargs)
        try:
            if own(self, "_procscope_site") is None:  # JoinableQueue calls Queue's too
                note_site(self)
        except Exception:  # noqa: BLE001
            log_internal_error()

    __init__.__wrapped__ = orig_init  # type: ignore[attr-defined]
    return __init__


def _queue_feed(orig_feed: Any) -> Any:
    """Queue._feed (the feeder thread's body), whose error hook gets the program's object.

    A message that fails to pickle reaches the queue's ``_on_queue_feeder_error(e, obj)``
    (overridden by concurrent.futures' call queue, which fails the call's future, and by
    programs) as the object that was put, not as our :class:`~._carry.Carried`. The hook
    is wrapped here, once per feeder thread, so that nothing is added to a put or to the
    queue object itself.
    """
    onerror_index = list(inspect.signature(orig_feed).parameters).index("onerror")

    def _feed(*args: Any) -> Any:
        onerror = args[onerror_index]

        def on_feeder_error(e: Any, obj: Any) -> Any:
            if type(obj) is _carry.Carried:
                obj = obj.message
            elif type(obj) is _carry.Stamped:
                obj = obj[0]
            return onerror(e, obj)

        args = (*args[:onerror_index], on_feeder_error, *args[onerror_index + 1 :])
        return orig_feed(*args)

    return staticmethod(_feed)


def _queue_reset(orig_reset: Any, send_bytes: Any, recv_bytes: Any) -> Any:
    """Queue._reset, after which the queue's own pipe calls skip our connection wrappers.

    A multiprocessing.Queue moves every message through its own pipe, whose
    ``send_bytes``/``recv_bytes`` it binds here (at creation, after a fork, and when it
    is rebuilt in a child process). Our wrappers on the connection class would only find
    that this pipe is not traced (the queue's own put and get are), at the cost of an
    extra call per message on each side; so the queue gets the original methods, bound
    to its own connections (held by the queue, not by the connection: no reference
    cycle that would keep a pipe open until the collector runs).
    """
    def _reset(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = orig_reset(self, *args, **kwargs)
        try:
            if isinstance(self._writer, mp_connection._ConnectionBase):
                self._send_bytes = MethodType(send_bytes, self._writer)
            if isinstance(self._reader, mp_connection._ConnectionBase):
                self._recv_bytes = MethodType(recv_bytes, self._reader)
        except Exception:  # noqa: BLE001 -- the queue keeps the methods it bound itself
            log_internal_error()
        return result

    _reset.__wrapped__ = orig_reset  # type: ignore[attr-defined]
    return _reset


def _safe_names(obj: Any) -> dict[str, Any]:
    try:
        return names_state(obj)
    except Exception:  # noqa: BLE001 -- names are a nicety; the pickle must not fail
        log_internal_error()
        return {}


def _reduce_ex(self: Any, protocol: int) -> Any:
    """Pickle a multiprocessing queue as copyreg would, plus its procscope names.

    ``__getstate__`` runs first and unguarded: it refuses to pickle a queue outside of
    spawning a process, and that error must reach the program exactly as before.
    """
    state = self.__getstate__()
    return (_carry.rebuild_from_state, (type(self), state, _safe_names(self)))


# --- pipes ------------------------------------------------------------------------------------

def _pipe(orig_pipe: Any) -> Any:
    def Pipe(duplex: bool = True) -> Any:  # noqa: N802 -- the name it replaces
        ends = orig_pipe(duplex)
        try:
            first = ends[0]
            note_site(first, 2, PIPE_FACTORIES)
            if not own(first, "_procscope_internal"):
                name = name_of(first)
                for end in ends:
                    set_own(end, PIPE_ATTR, True)
                    set_own(end, DEFAULT_NAME_ATTR, name)
        except Exception:  # noqa: BLE001
            log_internal_error()
        return ends

    Pipe.__wrapped__ = orig_pipe  # type: ignore[attr-defined]
    Pipe.__doc__ = orig_pipe.__doc__
    return Pipe


def _conn_send(orig_send: Any) -> Any:
    def send(self: Any, obj: Any) -> Any:
        if not self._procscope_pipe:
            return orig_send(self, obj)
        if not record():
            if _flight.append is not None:
                obj = _flight_send(self, PIPE_SEND, obj)
                try:  # (no cost without an exception from 3.11)
                    return orig_send(self, obj)
                except Exception as exc:  # (an object that cannot be pickled...)
                    _send_failed(self, SYSTEM_MP_PIPE, "send", exc)
                    raise
            return orig_send(self, obj)
        span, carrier = _start(SYSTEM_MP_PIPE, "send", self, obj)
        if span is None:
            return orig_send(self, obj)
        message = obj if carrier is None else _carry.Carried(obj, carrier)
        return _call_traced(span, orig_send, self, message)

    send.__wrapped__ = orig_send  # type: ignore[attr-defined]
    return send


def _conn_recv(orig_recv: Any) -> Any:
    def recv(self: Any) -> Any:
        if not self._procscope_pipe:
            return orig_recv(self)
        if attached_get() is not None:
            release()
        _carry.clear()
        started = _time_ns()
        obj = orig_recv(self)
        carrier = _carry.take()
        if type(carrier) is tuple:  # (a sampled message's carrier)
            # The receiving end's own given name, else the name the sender used.
            _receive(carrier, SYSTEM_MP_PIPE, "recv", self, started, obj,
                     destination=get_name(self) or carrier[_core.C_DESTINATION])
        elif _flight.append is not None:  # (unsampled: a sender stamp, or nothing)
            if carrier is None:
                _flight_note(self, PIPE_RECV, obj)
            else:
                _flight_received(self, PIPE_RECV_STAMPED, obj, carrier)
        return obj

    recv.__wrapped__ = orig_recv  # type: ignore[attr-defined]
    return recv


def _conn_send_bytes(orig_send_bytes: Any) -> Any:
    def send_bytes(self: Any, buf: Any, offset: int = 0, size: int | None = None) -> Any:
        if not self._procscope_pipe or not record():
            return orig_send_bytes(self, buf, offset, size)
        try:
            nbytes = size if size is not None else memoryview(buf).nbytes - offset
        except Exception:  # noqa: BLE001 -- the original call reports a bad buffer
            nbytes = None
        span, _ = _start(SYSTEM_MP_PIPE, "send_bytes", self, buf, nbytes)
        if span is None:
            return orig_send_bytes(self, buf, offset, size)
        # Raw bytes cannot carry a context: the span stands alone (see docs/messaging.md).
        span.set_attribute(_core.CONTEXT_PROPAGATED, False)
        return _call_traced(span, orig_send_bytes, self, buf, offset, size)

    send_bytes.__wrapped__ = orig_send_bytes  # type: ignore[attr-defined]
    return send_bytes


def _conn_recv_bytes(orig_recv_bytes: Any) -> Any:
    def recv_bytes(self: Any, maxlength: int | None = None) -> Any:
        if not self._procscope_pipe:
            return orig_recv_bytes(self, maxlength)
        if attached_get() is not None:
            release()
        if not record():
            return orig_recv_bytes(self, maxlength)
        started = _time_ns()
        data = orig_recv_bytes(self, maxlength)
        try:
            prof = _core.profile(self, SYSTEM_MP_PIPE, "recv_bytes", "receive")
            _core.receive_unlinked(prof, started, len(data))
        except Exception:  # noqa: BLE001
            log_internal_error()
        return data

    recv_bytes.__wrapped__ = orig_recv_bytes  # type: ignore[attr-defined]
    return recv_bytes


def _connection_reducer(orig_reduce: Any) -> Any:
    def reduce_connection(conn: Any) -> Any:
        rebuild, args = orig_reduce(conn)
        state = _safe_names(conn)
        if own(conn, PIPE_ATTR):
            state[PIPE_ATTR] = True
        if not state:
            return rebuild, args
        return _carry.rebuild_with_names, (rebuild, args, state)

    return reduce_connection


# --- Manager queues (proxies) --------------------------------------------------------------------

def _proxy_callmethod(orig_callmethod: Any) -> Any:
    def _callmethod(self: Any, methodname: str, args: Any = (), kwds: Any = {}) -> Any:  # noqa: B006
        try:
            traced = self._token.typeid in _PROXY_QUEUE_TYPES
        except Exception:  # noqa: BLE001
            traced = False
        if not traced:
            return orig_callmethod(self, methodname, args, kwds)
        if methodname in _PROXY_PUTS:
            return _proxy_put(orig_callmethod, self, methodname, args, kwds)
        if methodname in _PROXY_GETS:
            if attached_get() is not None:
                release()
            _carry.clear()
            started = _time_ns()
            obj = orig_callmethod(self, methodname, args, kwds)
            carrier = _carry.take()
            if type(carrier) is tuple:  # (a sampled message's carrier)
                _receive(carrier, SYSTEM_MANAGER, methodname, self, started, obj)
            elif _flight.append is not None:  # (unsampled: a sender stamp, or nothing)
                if carrier is None:
                    _flight_note(self, MANAGER_GET, obj)
                else:
                    _flight_received(self, MANAGER_GET_STAMPED, obj, carrier)
            return obj
        if methodname == "task_done" and attached_get() is not None:
            release()
        return orig_callmethod(self, methodname, args, kwds)

    _callmethod.__wrapped__ = orig_callmethod  # type: ignore[attr-defined]
    return _callmethod


def _proxy_put(orig_callmethod: Any, proxy: Any, methodname: str, args: Any, kwds: Any) -> Any:
    if not args or own(proxy, "_procscope_internal"):
        return orig_callmethod(proxy, methodname, args, kwds)
    if not record():
        if _flight.append is not None:  # (the flight recorder: see _flight)
            args = (_flight_manager_send(proxy, args[0]), *tuple(args)[1:])
        return orig_callmethod(proxy, methodname, args, kwds)
    obj = args[0]
    span, carrier = _start(SYSTEM_MANAGER, methodname, proxy, obj)
    if span is None:
        return orig_callmethod(proxy, methodname, args, kwds)
    if carrier is not None:
        args = (_carry.Hop(obj, carrier), *tuple(args)[1:])
    return _call_traced(span, orig_callmethod, proxy, methodname, args, kwds)


def _proxy_init(orig_init: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        orig_init(self, *args, **kwargs)
        try:
            if self._token.typeid in _PROXY_QUEUE_TYPES:
                note_site(self)
        except Exception:  # noqa: BLE001
            log_internal_error()

    __init__.__wrapped__ = orig_init  # type: ignore[attr-defined]
    return __init__


def _proxy_reduce(orig_reduce: Any) -> Any:
    def __reduce__(self: Any) -> Any:  # noqa: N807
        rebuild, args = orig_reduce(self)
        try:
            state = names_state(self) if self._token.typeid in _PROXY_QUEUE_TYPES else {}
        except Exception:  # noqa: BLE001
            state = {}
        if not state:
            return rebuild, args
        return _carry.rebuild_with_names, (rebuild, args, state)

    __reduce__.__wrapped__ = orig_reduce  # type: ignore[attr-defined]
    return __reduce__


class MultiprocessingMessaging:
    """Instruments multiprocessing's queues, pipes and Manager queue proxies."""

    def __init__(self) -> None:
        self._patcher = Patcher()
        self._proxies = Patcher()
        self._cancel_proxies: Any = None

    def instrument(self) -> None:
        p = self._patcher
        for traced in (mp_queues.Queue, mp_queues.SimpleQueue, mp_connection._ConnectionBase):
            install_defaults(traced)
        for cls in (mp_queues.Queue, mp_queues.JoinableQueue, mp_queues.SimpleQueue):
            p.patch(cls, "__init__", _init(original(cls, "__init__")))
        p.patch(mp_queues.Queue, "put", _queue_put(original(mp_queues.Queue, "put")))
        p.patch(mp_queues.JoinableQueue, "put",
                _queue_put(original(mp_queues.JoinableQueue, "put")))
        p.patch(mp_queues.Queue, "get", _queue_get(original(mp_queues.Queue, "get")))
        p.patch(mp_queues.JoinableQueue, "task_done",
                _task_done(original(mp_queues.JoinableQueue, "task_done")))
        p.patch(mp_queues.SimpleQueue, "put", _simple_put(original(mp_queues.SimpleQueue, "put")))
        p.patch(mp_queues.SimpleQueue, "get", _simple_get(original(mp_queues.SimpleQueue, "get")))
        p.patch(mp_queues.Queue, "_feed", _queue_feed(original(mp_queues.Queue, "_feed").__func__))
        p.patch(mp_queues.Queue, "__reduce_ex__", _reduce_ex)
        p.patch(mp_queues.SimpleQueue, "__reduce_ex__", _reduce_ex)

        base = mp_connection._ConnectionBase
        if "_reset" in mp_queues.Queue.__dict__:
            p.patch(mp_queues.Queue, "_reset", _queue_reset(
                original(mp_queues.Queue, "_reset"), original(base, "send_bytes"),
                original(base, "recv_bytes")))
        p.patch(mp_connection, "Pipe", _pipe(mp_connection.Pipe))
        _pickler.start_stamping(p)
        _flight_module.on_first_mp_record = _pickler.ensure_stamping
        if _flight.append is not None or _pickler.recorder_configured():
            _pickler.ensure_stamping()
        p.patch(base, "send", _conn_send(original(base, "send")))
        p.patch(base, "recv", _conn_recv(original(base, "recv")))
        p.patch(base, "send_bytes", _conn_send_bytes(original(base, "send_bytes")))
        p.patch(base, "recv_bytes", _conn_recv_bytes(original(base, "recv_bytes")))
        reducers = mp_reduction.ForkingPickler._extra_reducers  # type: ignore[attr-defined]
        connection_cls = mp_connection.Connection
        if connection_cls in reducers:
            p.patch_item(reducers, connection_cls, _connection_reducer(reducers[connection_cls]))

        # Manager proxies once the program imports multiprocessing.managers (a Manager()
        # does): importing it here cost every process about 4 ms (shared_memory, secrets,
        # hashlib), and most programs never use a Manager.
        self._cancel_proxies = when_imported("multiprocessing.managers", self._patch_proxies)

    def _patch_proxies(self, managers: Any) -> None:
        proxy = managers.BaseProxy
        install_defaults(proxy)
        p = self._proxies
        p.patch(proxy, "_callmethod", _proxy_callmethod(original(proxy, "_callmethod")))
        p.patch(proxy, "__init__", _proxy_init(original(proxy, "__init__")))
        p.patch(proxy, "__reduce__", _proxy_reduce(original(proxy, "__reduce__")))

    def uninstrument(self) -> None:
        _pickler.start_stamping(None)
        if self._cancel_proxies is not None:
            self._cancel_proxies()
            self._cancel_proxies = None
        self._proxies.restore()
        self._patcher.restore()
