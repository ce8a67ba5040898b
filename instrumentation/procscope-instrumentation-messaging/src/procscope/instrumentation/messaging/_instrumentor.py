"""``MessagingInstrumentor``: switching the messaging instrumentation on and off."""

from __future__ import annotations

from collections.abc import Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from procscope.core.switched import Switched

from . import _switch


class MessagingInstrumentor(Switched, BaseInstrumentor):  # type: ignore[misc]
    """Traces messages through queue, asyncio and multiprocessing queues and pipes.

    A singleton (as every ``BaseInstrumentor``); ``instrument()`` and ``uninstrument()``
    are idempotent. Queues keep working across both: after ``uninstrument()`` the
    original methods are back, and messages still in flight are delivered unchanged.
    """

    switch = _switch

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()
