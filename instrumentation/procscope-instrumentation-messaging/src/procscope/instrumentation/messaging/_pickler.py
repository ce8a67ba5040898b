"""The pickler that puts an unsampled message's sender stamp after its pickle (see
``_carry.Stamped``), and puts itself in place for multiprocessing's queues and pipes.

Apart from :mod:`._carry` because it needs ``multiprocessing``: imported with the
multiprocessing instrumentation (:mod:`._mp`), once the program imports
``multiprocessing``, not by every process procscope starts in (about 8 ms).
"""

from __future__ import annotations

import io
import multiprocessing.connection as mp_connection
import multiprocessing.queues as mp_queues
import os
import threading
from multiprocessing.reduction import ForkingPickler
from typing import Any

from procscope.core import shared_state

from ._carry import _LENGTH_AT, _TAIL, _UNKNOWN, Stamped
from ._carry import slot as _slot


class StampingPickler(ForkingPickler):
    """multiprocessing's pickler for its queues and connections, while instrumented:
    a :class:`Stamped` message is pickled as the message itself, the stamp after it;
    ``loads`` notes a stamp it finds in the carrier slot. Anything else is pickled and
    unpickled exactly as by ``ForkingPickler``."""

    @staticmethod
    def dumps(obj: Any, protocol: int | None = None) -> Any:  # type: ignore[override]
        if type(obj) is not Stamped:
            return _dumps(obj, protocol)
        buf = io.BytesIO()
        ForkingPickler(buf, protocol).dump(obj[0])  # (an unpicklable one fails as plain)
        buf.write(obj.stamp())
        return buf.getbuffer()

    @staticmethod
    def loads(data: Any, /, **kwargs: Any) -> Any:  # type: ignore[override]
        end = len(data)
        if end > _TAIL and data[-1] == 0x17 and data[-2] == 0xB5:
            named = data[_LENGTH_AT] % _UNKNOWN  # (the name's length: 0 for _MAIN, _UNKNOWN)
            stamp = data[end - _TAIL - named :]
            # (a slice of bytes is bytes already; of a memoryview, copied: it is kept)
            _slot.carrier = stamp if type(stamp) is bytes else bytes(stamp)
        # (no keywords, as multiprocessing calls it: a plain call costs a tenth of a
        # microsecond less than one that unpacks an empty dict)
        return _loads(data, **kwargs) if kwargs else _loads(data)


_dumps = ForkingPickler.dumps
_loads = ForkingPickler.loads


# The instrumentor's patcher while it instruments (see ensure_stamping), and the lock
# under which the pickler is put in place (a first record may come from any thread).
_stamping: list[Any] = []  # (a _patching.Patcher)
_stamping_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _stamping_lock
    _stamping_lock = threading.Lock()  # (a thread of the parent may have held it)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def recorder_configured() -> bool:
    """Whether this process's settings turn the flight recorder on (procscope.setup()
    instruments before it starts the recorder)."""
    settings = getattr(shared_state.get(), "scope_settings", None)
    return bool(getattr(settings, "flight_recorder_on", False))


def start_stamping(patcher: Any) -> None:
    """While instrumenting, ``patcher`` (the instrumentor's) puts the pickler in place
    when it is needed (ensure_stamping); None once uninstrumented."""
    with _stamping_lock:
        _stamping[:] = [] if patcher is None else [patcher]


def ensure_stamping() -> None:
    """Make :class:`StampingPickler` the pickler the queues and connections look
    up at each message, so that an unsampled message carries its sender's stamp after
    its pickle and a received one's is read. Only while the flight recorder is on in this
    process: at instrument() when the settings say so, else at its first
    multiprocessing record (``_flight.on_first_mp_record``); with the recorder off the
    plain pickler stays, and the bytes and costs are plain multiprocessing's. (A message
    stamped before the pickler is in place travels as a ``Stamped``'s reduce, which any
    receiver reads.)"""
    with _stamping_lock:
        if not _stamping:
            return
        for module in (mp_queues, mp_connection):
            if module.__dict__.get("_ForkingPickler") is ForkingPickler:
                _stamping[0].patch(module, "_ForkingPickler", StampingPickler)
