"""Switching the lifecycle instrumentation on and off, without OpenTelemetry's
instrumentor base class.

``procscope.setup()`` switches plugins here directly: importing ``BaseInstrumentor``
brings in OpenTelemetry's semantic-convention helpers, wrapt, asyncio, importlib.metadata
and packaging (about 60 ms in every process procscope starts in). The public
:class:`~._instrumentor.LifecycleInstrumentor` switches through the same functions, and
reads whether it is on from here, so either way round the two agree.
"""

from __future__ import annotations

from typing import Any

from procscope.core import cheap_child
from procscope.core.post_import import when_imported

from . import (
    _ending,
    _processes,
    _program,
    _subprocess,
    _task_records,  # noqa: F401 -- its kind, for a dead child's task records
    _threads,
)
from ._patching import Patches
from ._runtime import runtime

PATCHES = Patches()
_on = False
_cancel_tasks: Any = None


def _instrument_tasks(_asyncio: Any) -> None:
    # Imported with asyncio, not before: most programs never import asyncio (~15 ms).
    from . import _tasks

    if _on:
        _tasks.instrument(PATCHES)


def _collect_cheap_children(changed_only: bool = False) -> int:
    # (imported when used: it needs OpenTelemetry's SDK, which a plugin alone may lack)
    from . import _cheap_children

    return _cheap_children.collect_if_changed() if changed_only else _cheap_children.collect()


def is_on() -> bool:
    return _on


def instrument(tracer_provider: Any = None, spans: Any = None, **_: Any) -> None:
    """Patch what the lifecycle instrumentation patches (idempotent)."""
    global _on, _cancel_tasks
    if _on:
        return
    runtime.configure(tracer_provider, spans)
    try:
        _threads.instrument(PATCHES)
        _processes.instrument(PATCHES)
        _subprocess.instrument(PATCHES)
        _ending.instrument(PATCHES)
        _program.instrument(PATCHES)
    except BaseException:
        PATCHES.restore_all()
        runtime.active = False
        raise
    _on = True
    cheap_child.set_collector(_collect_cheap_children)
    _cancel_tasks = when_imported("asyncio", _instrument_tasks)
    _subprocess.start_from_environment()
    if _ending.current_run() is None:
        # Not a child with its own process span: the program at the top, whose end
        # nobody else can record.
        _program.watch()
        _ending.watch_main_thread_exceptions()
        _ending.install_sigterm()


def uninstrument(**_: Any) -> None:
    """Restore everything patched (idempotent)."""
    global _on, _cancel_tasks
    if not _on:
        return
    _on = False
    if _cancel_tasks is not None:
        _cancel_tasks()
        _cancel_tasks = None
    runtime.active = False
    PATCHES.restore_all()
    _processes.uninstrument()
    _threads.uninstrument()
    _ending.remove_sigterm()
