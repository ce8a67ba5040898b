"""Setting procscope up in a child process as in its parent: what the core knows of it.

The lifecycle instrumentor carries the parent's settings into each child: a spawn or
forkserver child gets them with its pickled ``Process`` object, a Python subprocess in its
environment. Building the pipeline there (tracer provider, processors, exporters, the
instrumentors of the level) is the work of the ``procscope`` distribution, which no
plugin imports by name: a plugin installed alone, beside ``procscope-core`` and
OpenTelemetry, still runs, and instruments the program's own tracer provider.

So the builder registers itself here when it is imported (:func:`register`), as
``"module:attribute"`` references rather than objects: they pickle into a spawn child's
launch data, and they are imported only when a child needs them. A child whose parent
registered a builder finds it (:func:`set_up_like_parent`) without scanning installed
packages' entry points (``importlib.metadata``, tens of milliseconds in each child).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

# What the builder provides, by role:
# - SET_UP: ``f(settings: dict) -> None``, set the pipeline up in this process with the
#   parent's settings (the plain values of its ``Settings``), unless already set up;
# - PYTHON_ENVIRON: ``f(env: dict[str, str]) -> dict[str, str]``, the environment under
#   which a Python program of this environment starts with procscope set up.
SET_UP = "set_up"
PYTHON_ENVIRON = "python_environ"

_registered: dict[str, str] = {}
_preload: list[str] = []


def register(*, set_up: str, python_environ: str, preload: tuple[str, ...] = ()) -> None:
    """Name the functions (``"module:attribute"``) that set a child up, and the modules
    a fork server should import once for all its children (``preload``)."""
    _registered[SET_UP] = set_up
    _registered[PYTHON_ENVIRON] = python_environ
    _preload[:] = preload


def preload_modules() -> tuple[str, ...]:
    """What a fork server imports in advance, so that each forkserver child, forked from
    it, sets up without importing OpenTelemetry and procscope again."""
    return tuple(_preload)


def builders() -> dict[str, str]:
    """The references registered in this process, to hand to a child ({} if none)."""
    return dict(_registered)


def _load(reference: str | None) -> Callable[..., Any] | None:
    if not reference:
        return None
    module, _, attribute = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        return None  # not installed in this Python: the plugin works alone
    return found if callable(found) else None


def set_up_like_parent(settings: Mapping[str, Any], given: Mapping[str, str] | None) -> bool:
    """Set the pipeline up here with the parent's ``settings``, by the builder the parent
    registered (``given``), else by the one registered here (a fork server's preload);
    False when none can be found, which leaves the caller to instrument on its own."""
    builder = _load((given or {}).get(SET_UP) or _registered.get(SET_UP))
    if builder is None:
        return False
    builder(dict(settings))
    return True


def python_child_environ(env: dict[str, str]) -> dict[str, str]:
    """``env`` made to start procscope in a Python child; unchanged without a builder."""
    make = _load(_registered.get(PYTHON_ENVIRON))
    return env if make is None else dict(make(env))
