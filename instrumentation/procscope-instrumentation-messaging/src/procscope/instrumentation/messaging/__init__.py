"""procscope's messaging instrumentor: messages through queues and pipes, sender to receiver.

``MessagingInstrumentor().instrument(tracer_provider=...)`` traces ``queue`` queues,
``asyncio`` queues, and ``multiprocessing`` queues, pipes and Manager queues: a producer
span at each sampled put or send, its context carried with the message (beside it within
a process, pickled with it across processes), and a consumer span at the get or receive,
in the producer's trace, whose context stays attached to the consumer until its next get
(or ``task_done``). See docs/messaging.md for the model and its limits.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import _core
from ._asyncq import AsyncioQueues
from ._mp import MultiprocessingMessaging
from ._threadq import ThreadQueues

__all__ = ["MessagingInstrumentor"]

_VERSION = "0.1.0"


class MessagingInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces messages through queue, asyncio and multiprocessing queues and pipes.

    A singleton (as every ``BaseInstrumentor``); ``instrument()`` and ``uninstrument()``
    are idempotent. Queues keep working across both: after ``uninstrument()`` the
    original methods are back, and messages still in flight are delivered unchanged.
    """

    def __init__(self) -> None:
        if getattr(self, "_families", None) is None:
            self._families = (ThreadQueues(), AsyncioQueues(), MultiprocessingMessaging())

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        _core.runtime.provider = provider
        _core.runtime.tracer = trace.get_tracer(
            "procscope.instrumentation.messaging",
            _VERSION,
            tracer_provider=provider,
        )
        _core.configure_for_tracer()
        for family in self._families:
            family.instrument()

    def _uninstrument(self, **kwargs: Any) -> None:
        for family in reversed(self._families):
            family.uninstrument()
        # The calling thread's message context goes too (others keep theirs until their
        # next get or task_done, which the original methods no longer do: see the docs).
        _core.release()
