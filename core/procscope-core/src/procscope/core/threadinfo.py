"""The calling thread, asked without side effects.

``threading.current_thread()`` called in a thread that ``threading`` did not start
(``_thread.start_new_thread``, a thread of a C library) registers a ``_DummyThread`` for
it: an entry in ``threading._active`` and in ``threading.enumerate()`` that the program
would not have had (and that, before Python 3.13, is never removed). procscope reads
``threading``'s own registry instead, and names such a thread itself.
"""

from __future__ import annotations

import sys
import threading

_get_ident = threading.get_ident
_get_native_id = threading.get_native_id

# The name procscope records for a thread that threading does not know, followed by its
# native id. threading itself would call it "Dummy-N", but only by registering it.
FOREIGN_THREAD_PREFIX = "foreign-"


# threading's own mapping of ident to Thread, the one current_thread() reads: one dict for
# the interpreter's life (threading empties and refills it after a fork, never replaces
# it). Reading one key of a dict is atomic under the GIL.
_active: dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]


def registered_thread() -> threading.Thread | None:
    """The calling thread's ``Thread``, or None for a thread that threading does not know
    (also a ``Thread`` whose ``run`` has not begun: it registers itself first thing)."""
    return _active.get(_get_ident())


def current_thread_name() -> str:
    """The calling thread's name; ``foreign-<native id>`` for a thread threading does not
    know. On the put/get path: as fast as ``threading.current_thread().name``."""
    try:
        return _active[_get_ident()].name
    except KeyError:
        return FOREIGN_THREAD_PREFIX + str(_get_native_id())


def on_main_thread() -> bool:
    """True in the main thread (``threading.current_thread() is threading.main_thread()``
    without registering anything)."""
    return _get_ident() == threading.main_thread().ident


def current_process_name() -> str:
    """``multiprocessing.current_process().name``, without importing multiprocessing: in a
    process where it was never imported the answer is "MainProcess", as it would be (a
    process that multiprocessing starts has it imported before its target runs)."""
    module = sys.modules.get("multiprocessing")
    current = getattr(module, "current_process", None)
    if current is None:  # (never imported, or still being imported)
        return "MainProcess"
    return str(current().name)
