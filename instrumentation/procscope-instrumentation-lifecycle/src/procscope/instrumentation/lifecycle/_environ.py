"""The environment that a child started with ``env=None`` really gets.

``os.environ`` is a copy of the environment taken when Python started, kept in step with
what the program sets through it. ``os.putenv`` and ``os.unsetenv`` change the C library's
``environ`` alone, and that is what ``exec`` hands a child when ``Popen`` is given no
``env``. procscope, which must pass its variables (``TRACEPARENT``, the settings) to a
Python child, starts from that same ``environ``, read through ctypes (Linux and other
POSIX systems: the ``environ`` symbol; macOS: ``_NSGetEnviron()``). Where it cannot be
read (no ctypes, another platform), ``os.environ`` is the fallback, as before.

Read with the GIL held (ctypes takes no lock and releases nothing for an index): Python
code that changes the environment (``os.putenv``, ``os.environ[...] = ``) holds it too,
so the read is consistent with every change made from Python. A C library thread
calling ``setenv`` at the same moment is the C library's own race (as with ``getenv``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

# [] until the first read; then [reader] (a callable returning the environ array), or
# [None] where the C environ cannot be read.
_reader: list[Callable[[], Any] | None] = []


def _make_reader() -> Callable[[], Any] | None:
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if sys.platform == "darwin":
            get = libc._NSGetEnviron
            get.restype = ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p))
            get.argtypes = []
            return lambda: get().contents
        # The variable itself (in_dll aliases it): setenv may move the array, and each
        # read then follows the variable to where it is now.
        environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
        return lambda: environ
    except (ImportError, OSError, AttributeError, ValueError):
        return None


def real_environ() -> dict[str, str]:
    """The process's environment as a child started now with ``env=None`` would get it."""
    if not _reader:
        _reader.append(_make_reader() if os.name == "posix" else None)
    reader = _reader[0]
    if reader is None:
        return dict(os.environ)
    entries = reader()
    environ: dict[str, str] = {}
    index = 0
    while True:
        entry = entries[index]
        if entry is None:
            return environ
        index += 1
        # As Python reads it into os.environ at start: the name is what comes before the
        # first "=", an entry without one is skipped, and the first of two entries with
        # the same name is the one that counts (getenv finds that one).
        name, equals, value = entry.partition(b"=")
        if equals:
            environ.setdefault(os.fsdecode(name), os.fsdecode(value))
