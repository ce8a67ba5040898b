"""Run a function when a module is imported: patch a library only if the program uses it.

``asyncio`` costs about 15 ms to import, and most programs never import it; patching it
at set-up would make every process procscope starts in pay that. :func:`when_imported`
runs the patch at once when the module is already imported, else right after the
program's own first import of it, still inside that import (under the module's import
lock), so that no code of the program sees the module unpatched.

How: a finder first on ``sys.meta_path``, there only while a hook waits. For a watched
name it asks the finders after it for the module's spec, and wraps the spec's loader so
that the hooks run after the module's code. The wrapper puts the real loader back on the
spec and the module (``__loader__``, ``__spec__.loader``) before the module's code runs,
so that nothing the module or the program can see afterwards differs from a plain import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .forksafe import ForkSafeLock
from .guard import log_internal_error

Hook = Callable[[Any], None]

# (fork-safe: a thread of the parent importing a watched module at the fork would leave a
# plain lock held in the child, whose next watched import would wait on it for ever)
_lock = ForkSafeLock()
# name -> hooks waiting for it; a name leaves when its hooks run or are cancelled.
_waiting: dict[str, list[Hook]] = {}


def when_imported(name: str, hook: Hook) -> Callable[[], None]:
    """Call ``hook(module)`` once: now if ``name`` is imported, else after its import.

    Returns a function that cancels the hook if it has not run yet. A failing hook is
    logged as an internal error; the import itself is never affected.
    """
    with _lock:
        module = sys.modules.get(name)
        if module is None:
            _waiting.setdefault(name, []).append(hook)
            if _FINDER not in sys.meta_path:
                sys.meta_path.insert(0, _FINDER)
            return lambda: _cancel(name, hook)
    _run(hook, module)
    return lambda: None


def _cancel(name: str, hook: Hook) -> None:
    with _lock:
        hooks = _waiting.get(name)
        if hooks is not None and hook in hooks:
            hooks.remove(hook)
            if not hooks:
                del _waiting[name]
        _retire_finder()


def _retire_finder() -> None:
    # (under _lock) Gone from sys.meta_path once nothing waits: a program that lists its
    # finders then sees only its own.
    if not _waiting and _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def _run(hook: Hook, module: Any) -> None:
    try:
        hook(module)
    except Exception:  # noqa: BLE001 -- the program's import must not fail for ours
        log_internal_error()


class _Finder:
    """Finds nothing itself: wraps the loader the other finders find for a watched name."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _waiting:
            return None
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # (a namespace package or a legacy loader: imported unwatched)
        spec.loader = _Loader(loader, fullname)
        return spec

    def invalidate_caches(self) -> None:
        pass


class _Loader:
    """The real loader's stand-in for one import: runs the hooks after the module."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: Any) -> Any:
        # (spec.loader stays this stand-in until exec_module: the import system calls
        # spec.loader.exec_module after making the module)
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        loader = self._loader
        module.__loader__ = loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = loader
        loader.exec_module(module)
        with _lock:
            hooks = _waiting.pop(self._name, [])
            _retire_finder()
        for hook in hooks:
            _run(hook, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_FINDER = _Finder()
