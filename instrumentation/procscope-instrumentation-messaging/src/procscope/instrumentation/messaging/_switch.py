"""Switching the messaging instrumentation on and off, without OpenTelemetry's
instrumentor base class (see the lifecycle plugin's ``_switch`` for why); the public
:class:`~._instrumentor.MessagingInstrumentor` switches through the same functions."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from . import _core
from ._asyncq import AsyncioQueues
from ._mp import MultiprocessingMessaging
from ._threadq import ThreadQueues

VERSION = "0.1.0"
FAMILIES = (ThreadQueues(), AsyncioQueues(), MultiprocessingMessaging())
_on = False


def is_on() -> bool:
    return _on


def instrument(tracer_provider: Any = None, **_: Any) -> None:
    """Patch the queues and pipes (idempotent)."""
    global _on
    if _on:
        return
    provider = tracer_provider or trace.get_tracer_provider()
    _core.runtime.provider = provider
    _core.runtime.tracer = trace.get_tracer(
        "procscope.instrumentation.messaging",
        VERSION,
        tracer_provider=provider,
    )
    _core.configure_for_tracer()
    for family in FAMILIES:
        family.instrument()
    _on = True


def uninstrument(**_: Any) -> None:
    """Put the original methods back (idempotent)."""
    global _on
    if not _on:
        return
    _on = False
    for family in reversed(FAMILIES):
        family.uninstrument()
    # The calling thread's message context goes too (others keep theirs until their
    # next get or task_done, which the original methods no longer do: see the docs).
    _core.release()
