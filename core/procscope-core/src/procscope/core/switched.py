"""Instrumentors whose on/off state is a switch of their plugin's own.

``procscope.setup()`` turns its plugins on and off through each plugin's switch (a
module with ``instrument(**kwargs)``, ``uninstrument()`` and ``is_on()``), not through
the instrumentor classes: their base, OpenTelemetry's ``BaseInstrumentor``, imports its
semantic-convention helpers, wrapt, asyncio, importlib.metadata and packaging, tens of
milliseconds in every process procscope starts in. The public classes mix this in before
``BaseInstrumentor`` so that both ways agree on whether a plugin is on: the state is the
switch's, and the base class's own writes to it change nothing.
"""

from __future__ import annotations

from typing import Any


class Switched:
    """Mixed in before ``BaseInstrumentor``; ``switch`` is the plugin's switch."""

    switch: Any

    @property
    def _is_instrumented_by_opentelemetry(self) -> bool:
        return bool(self.switch.is_on())

    @_is_instrumented_by_opentelemetry.setter
    def _is_instrumented_by_opentelemetry(self, value: bool) -> None:
        pass

    def _instrument(self, **kwargs: Any) -> None:
        self.switch.instrument(**kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        self.switch.uninstrument()
