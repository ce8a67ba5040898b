"""Switching the messaging instrumentation on and off, without OpenTelemetry's
instrumentor base class (see the lifecycle plugin's ``_switch`` for why); the public
:class:`~._instrumentor.MessagingInstrumentor` switches through the same functions."""

from __future__ import annotations

import importlib
from typing import Any

from opentelemetry import trace

from procscope.core.post_import import when_imported

from . import _core
from ._threadq import ThreadQueues

VERSION = "0.1.0"


class _WhenImported:
    """A family of queues instrumented once the program imports its module: most programs
    never import asyncio (about 15 ms) or multiprocessing (about 8 ms), and importing
    them at set-up would make every process procscope starts in pay for them."""

    def __init__(self, module: str, family: str) -> None:
        self._module = module
        self._family_name = family  # "submodule:Class", imported with the module
        self._family: Any = None
        self._cancel: Any = None

    def instrument(self) -> None:
        self._cancel = when_imported(self._module, self._instrument_now)

    def _instrument_now(self, _module: Any) -> None:
        if self._family is None:
            submodule, _, name = self._family_name.partition(":")
            found = importlib.import_module(f"{__package__}.{submodule}")
            self._family = getattr(found, name)()
        if _on:
            self._family.instrument()

    def uninstrument(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None
        if self._family is not None:
            self._family.uninstrument()


FAMILIES = (
    ThreadQueues(),
    _WhenImported("asyncio", "_asyncq:AsyncioQueues"),
    _WhenImported("multiprocessing", "_mp:MultiprocessingMessaging"),
)
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
    _on = True
    for family in FAMILIES:
        family.instrument()


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
