"""``LifecycleInstrumentor``: switching the lifecycle instrumentation on and off."""

from __future__ import annotations

from collections.abc import Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from procscope.core.switched import Switched

from . import _switch


class LifecycleInstrumentor(Switched, BaseInstrumentor):  # type: ignore[misc]
    """Processes, threads and asyncio tasks: who started whom, how each lived and ended.

    ``instrument(tracer_provider=None, spans=None)``: ``spans`` is ``"all"`` (a span for
    every thread, task and pool call) or ``"errors"`` (those only when they fail; context
    still propagates); default from ``PROCSCOPE_LIFECYCLE_SPANS``, else ``"all"``. Process
    spans follow the level alone (see docs/lifecycle.md).
    """

    switch = _switch

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()
