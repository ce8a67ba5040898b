"""``LifecycleInstrumentor``: switching the lifecycle instrumentation on and off."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _ending, _processes, _program, _subprocess, _tasks, _threads
from ._patching import Patches
from ._runtime import runtime


class LifecycleInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Processes, threads and asyncio tasks: who started whom, how each lived and ended.

    ``instrument(tracer_provider=None, spans=None)``: ``spans`` is ``"all"`` (a span for
    every thread, task and pool call) or ``"errors"`` (those only when they fail; context
    still propagates); default from ``PROCSCOPE_LIFECYCLE_SPANS``, else ``"all"``. Process
    spans follow the level alone (see docs/lifecycle.md).
    """

    def __init__(self) -> None:
        # BaseInstrumentor is a singleton: __init__ runs on every LifecycleInstrumentor().
        if not hasattr(self, "_patches"):
            self._patches = Patches()

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        runtime.configure(kwargs.get("tracer_provider"), kwargs.get("spans"))
        try:
            _threads.instrument(self._patches)
            _tasks.instrument(self._patches)
            _processes.instrument(self._patches)
            _subprocess.instrument(self._patches)
            _ending.instrument(self._patches)
            _program.instrument(self._patches)
        except BaseException:
            self._patches.restore_all()
            runtime.active = False
            raise
        _subprocess.start_from_environment()
        if _ending.current_run() is None:
            # Not a child with its own process span: the program at the top, whose end
            # nobody else can record.
            _program.watch()
            _ending.watch_main_thread_exceptions()
            _ending.install_sigterm()

    def _uninstrument(self, **kwargs: Any) -> None:
        runtime.active = False
        self._patches.restore_all()
        _processes.uninstrument()
        _threads.uninstrument()
        _ending.remove_sigterm()
