"""Names of queues and pipes: given with ``procscope.name()``, else where they were made.

At creation only the caller's file and line are noted (two attribute reads on a frame);
the readable name, ``jobs@pipeline.py:12`` (the variable assigned on that line when the
line reads like ``jobs = Queue()``), is made the first time a sampled message needs it.
Queues made by the standard library itself (executor work queues, Pool and Manager
plumbing), by OpenTelemetry or by procscope are marked *internal* and never traced: they
carry other APIs' traffic, which those APIs' own instrumentation describes.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import sysconfig
from typing import Any

from procscope.core import shared_state

SITE_ATTR = "_procscope_site"
DEFAULT_NAME_ATTR = "_procscope_default_name"
INTERNAL_ATTR = "_procscope_internal"
NAME_ATTR = "_procscope_name"  # procscope.name()'s attribute (procscope.core.naming)
SIDE_ATTR = "_procscope_side"  # the side map of an in-process queue (_side.py)
SIDE_LOCK_ATTR = "_procscope_side_lock"  # (its lock, the pid that made it): _side.py
PIPE_ATTR = "_procscope_pipe"  # a connection made by multiprocessing.Pipe()
PROFILE_ATTR = "_procscope_profiles"  # constants of its sampled messages (_core.profile)

# Why our attributes are never read or written through ``obj.__dict__``: CPython 3.11 and
# 3.12 keep a plain object's attributes inline, without a dict, until someone asks for
# ``__dict__``; from then on every attribute access in the object's own methods goes
# through the dict, which is slower. For a queue.Queue that made every put+get about
# 0.2-0.4 us slower (measured in benchmarks/messaging), traced or not, for the queue's
# whole life. So we set them with object.__setattr__ and read them as attributes, with
# class-level defaults on every traced class (install_defaults) so that a read never
# misses (a miss would build an AttributeError and call a user class's __getattr__).
CLASS_DEFAULTS: dict[str, Any] = {
    SITE_ATTR: None,
    DEFAULT_NAME_ATTR: None,
    INTERNAL_ATTR: False,
    NAME_ATTR: None,
    SIDE_ATTR: None,
    SIDE_LOCK_ATTR: None,
    PIPE_ATTR: False,
    PROFILE_ATTR: None,
    "_procscope_flight": None,  # the flight recorder's record codes (see _flight)
}

_getattribute = object.__getattribute__
set_own = object.__setattr__
_names_state: Any = shared_state.get()


def install_defaults(cls: type) -> None:
    """Give a traced class our attributes' defaults (once; never removed).

    They stay after ``uninstrument()``: a call already inside one of our wrappers on
    another thread may still read them, and an inert class attribute costs nothing.
    """
    for attribute, value in CLASS_DEFAULTS.items():
        if attribute not in cls.__dict__:
            setattr(cls, attribute, value)


def own(obj: Any, attribute: str) -> Any:
    """One of our attributes of ``obj``, or None; no user hook runs, no __dict__ is made."""
    try:
        return _getattribute(obj, attribute)
    except AttributeError:
        return None


def get_name(obj: Any) -> str | None:
    """The name given with ``procscope.name()`` (as ``procscope.core.naming.get_name``,
    without reading ``__dict__``)."""
    name = own(obj, NAME_ATTR)
    if type(name) is str:
        return name
    names = _names_state.names
    if not names:
        return None
    try:
        return names.get(obj)  # type: ignore[no-any-return]
    except TypeError:
        return None

_ASSIGNED = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*)\s*(?::[^=]+)?=(?!=)")
_ASSIGNED_PAIR = re.compile(r"^\s*\(?\s*([A-Za-z_]\w*)\s*,\s*([A-Za-z_]\w*)\s*\)?\s*=(?!=)")


def _several_values(expression: str) -> bool:
    """True when an assignment's right side is a tuple (a comma outside brackets)."""
    depth = 0
    for char in expression.split("#", 1)[0]:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            return True
    return False


def _dir_of(path: str | None) -> str | None:
    return os.path.normcase(os.path.abspath(path)) + os.sep if path else None


_STDLIB = _dir_of(sysconfig.get_paths().get("stdlib"))
_SITE_PACKAGES = ("site-packages" + os.sep, "dist-packages" + os.sep)
_OURS = _dir_of(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))  # procscope/
_MINE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_OTEL = os.sep + "opentelemetry" + os.sep
# procscope's bundled example program (`procscope demo`) is user code that ships inside
# the package: installed from wheels it lies under _OURS with procscope's own modules.
_DEMO_APP = os.sep + "_demo_app.py"


def _is_library(filename: str) -> bool:
    """Frames to skip when looking for the user code that made a queue."""
    path = os.path.normcase(filename)
    if _OURS is not None and path.startswith(_OURS):
        return not path.endswith(_DEMO_APP)
    if _STDLIB is not None and path.startswith(_STDLIB):
        return not any(part in path for part in _SITE_PACKAGES)
    return _OTEL in path


def _is_internal(filename: str) -> bool:
    """Made by the standard library, OpenTelemetry or procscope: plumbing, not a message."""
    return _is_library(filename) or filename.startswith("<frozen")


def _factory_files() -> frozenset[str]:
    """The modules between a user's call and ``__init__``: the classes and their factories.

    Named without importing them: multiprocessing (about 8 ms, imported by fewer
    programs than not; its classes are patched at its import) and asyncio (about 15 ms)
    lie beside queue.py in the standard library, as ``multiprocessing/queues.py``... and
    ``asyncio/queues.py``."""
    import queue

    files = {queue.__file__} if queue.__file__ else set()
    if queue.__file__:
        stdlib = os.path.dirname(queue.__file__)
        for name in ("queues.py", "context.py", "connection.py", "managers.py"):
            files.add(os.path.join(stdlib, "multiprocessing", name))
        files.add(os.path.join(stdlib, "asyncio", "queues.py"))
    return frozenset(files)


_FACTORIES = _factory_files()
# Pipe() is a factory only through a context (mp.Pipe, get_context(...).Pipe): a pipe made
# inside multiprocessing.queues is a queue's own plumbing.
PIPE_FACTORIES = frozenset(f for f in _FACTORIES if f.endswith(("context.py", "connection.py")))


def note_site(obj: Any, depth: int = 2, factories: frozenset[str] | None = None) -> None:
    """Remember where ``obj`` was made, and whether by a library (then it is internal).

    Called from a patched ``__init__`` or factory; ``depth`` skips our own frames and
    ``factories`` names the modules whose frames lead from the user's call to ours.
    """
    if factories is None:
        factories = _FACTORIES
    try:
        frame: Any = sys._getframe(depth)
    except ValueError:
        return
    while frame is not None and (
        frame.f_code.co_filename in factories or frame.f_code.co_filename.startswith(_MINE)
    ):
        frame = frame.f_back
    if frame is None:
        return
    internal = _is_internal(frame.f_code.co_filename)
    first = frame
    while frame is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        frame = first
    try:
        if internal:
            set_own(obj, INTERNAL_ATTR, True)
        set_own(obj, SITE_ATTR, (frame.f_code.co_filename, frame.f_lineno))
    except (AttributeError, TypeError):
        return  # an object that takes no attributes: it keeps the default name


def is_internal(obj: Any) -> bool:
    return bool(own(obj, INTERNAL_ATTR))


def default_name(obj: Any) -> str:
    """``variable@file.py:line`` where the object was made, or ``Type#id`` if unknown."""
    name = own(obj, DEFAULT_NAME_ATTR)
    if name is not None:
        return name  # type: ignore[no-any-return]
    name = default_name_from(own(obj, SITE_ATTR), type(obj).__name__, id(obj))
    try:
        set_own(obj, DEFAULT_NAME_ATTR, name)
    except (AttributeError, TypeError):
        pass  # an object without attributes: made again next time
    return name


def default_name_from(site: tuple[str, int] | None, type_name: str, ident: int) -> str:
    """:func:`default_name` of an object of ``type_name`` made at ``site`` (or None)."""
    if site is None:
        return f"{type_name}#{ident:x}"
    filename, line = site
    variable = None
    text = linecache.getline(filename, line)
    match = _ASSIGNED.match(text)
    if match:
        variable = match.group(1)
    else:
        pair = _ASSIGNED_PAIR.match(text)  # the two ends of a pipe: a, b = Pipe()
        if pair and not _several_values(text[pair.end() :]):
            # Not for `a, b = Queue(), Queue()`: which one is which is not known here.
            variable = f"{pair.group(1)},{pair.group(2)}"
    where = f"{os.path.basename(filename)}:{line}"
    return f"{variable}@{where}" if variable else f"{type_name}@{where}"


def made_as(obj: Any) -> tuple[Any, ...]:
    """What naming ``obj`` needs, kept apart from it (a few attribute reads): (name
    given, default name if made, where it was made, type name, id)."""
    return (get_name(obj), own(obj, DEFAULT_NAME_ATTR), own(obj, SITE_ATTR),
            type(obj).__name__, id(obj))


def name_made_as(made: tuple[Any, ...]) -> str:
    """:func:`name_of` of an object gone, from its :func:`made_as`."""
    given, default, site, type_name, ident = made
    if type(given) is str:
        return given
    return default if default is not None else default_name_from(site, type_name, ident)


def name_of(obj: Any) -> str:
    """The name to record for a queue or pipe."""
    given = get_name(obj)
    if given is not None:
        return given
    return default_name(obj)


def copy_names(source: Any, target: Any) -> None:
    """Give a rebuilt object (in a child process) the names of the one it was pickled from."""
    try:
        for key, value in source.items():
            set_own(target, key, value)
    except (AttributeError, TypeError):
        return


def names_state(obj: Any) -> dict[str, Any]:
    """What of ``obj``'s naming must travel with it to another process."""
    state: dict[str, Any] = {}
    given = get_name(obj)
    if given is not None:
        state[NAME_ATTR] = given
    name = own(obj, DEFAULT_NAME_ATTR)
    if name is None and own(obj, SITE_ATTR) is not None:
        name = default_name(obj)
    if name is not None:
        state[DEFAULT_NAME_ATTR] = name
    if own(obj, INTERNAL_ATTR):
        state[INTERNAL_ATTR] = True
    return state
