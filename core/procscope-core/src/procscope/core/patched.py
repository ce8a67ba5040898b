"""What a function procscope installs keeps of the one it replaces.

A program, the standard library and other tools look at the callables we replace: pickle
sends a function by reference (its ``__module__`` and ``__qualname__``, then checks that
the object found there is the one it was given), spawn pickles ``Process(target=os._exit)``,
``inspect.signature`` and ``functools.wraps`` users read the signature through
``__wrapped__``, and help() reads ``__doc__``. So every replacement gets the original's
name, documentation and ``__wrapped__``, and the place where it is installed as its own.
"""

from __future__ import annotations

import types
from typing import Any


def keep_identity(replacement: Any, original: Any, owner: Any, name: str) -> Any:
    """Give ``replacement``, about to be installed as ``owner.name``, the identity of
    ``original``; return it. Anything but a function (a class such as our
    ``queue.SimpleQueue``, which has its own) is returned unchanged."""
    target = _function(replacement)
    if target is None:
        return replacement
    source = _function(original)
    source = original if source is None else source
    for attribute in ("__name__", "__doc__"):
        value = getattr(source, attribute, None)
        if isinstance(value, str) or attribute == "__doc__":
            setattr(target, attribute, value)
    # Where pickle will look for it, that is where it is installed, which is not always
    # where the original says it lives: os._exit's says "posix" (posix._exit stays the
    # builtin, so pickle would refuse ours), and a method inherited by the class we patch
    # (multiprocessing.popen_forkserver.Popen.poll) names the base class.
    if isinstance(owner, types.ModuleType):
        target.__module__ = owner.__name__
        target.__qualname__ = name
    else:
        target.__module__ = owner.__module__
        target.__qualname__ = f"{owner.__qualname__}.{name}"
    target.__wrapped__ = source  # type: ignore[attr-defined]
    return replacement


def _function(obj: Any) -> types.FunctionType | None:
    """The Python function behind ``obj`` (itself, or a classmethod's or staticmethod's)."""
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    return obj if isinstance(obj, types.FunctionType) else None


# On one line, so that the call is at the function's first line (see call_as).
def _trampoline(function: Any) -> Any: return function()


def call_as(caller: types.FrameType, function: Any) -> Any:
    """``function()``, called from a frame that the warnings module takes for ``caller``.

    A C function that warns about its caller (``os.fork`` on Python 3.12+: "This process is
    multi-threaded, use of fork() may lead to deadlocks") names the frame that called it,
    which would be our wrapper: the program's line would be lost, and so would the
    program's filters (by module) and once-per-line registry. So the call is made from a
    one-line function whose code says the caller's file and line and whose globals are the
    caller's (its module name and ``__warningregistry__``). Only for cold paths (a fork):
    it builds a function each time.
    """
    try:
        code = _trampoline.__code__.replace(
            co_filename=caller.f_code.co_filename,
            co_firstlineno=caller.f_lineno or caller.f_code.co_firstlineno,
            co_name=caller.f_code.co_name,
        )
        trampoline: Any = types.FunctionType(code, caller.f_globals)
    except Exception:  # noqa: BLE001 -- never keep the program from its call
        trampoline = _trampoline
    return trampoline(function)
