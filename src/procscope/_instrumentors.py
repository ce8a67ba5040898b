"""Which of procscope's instrumentors each level turns on, and turning them on and off."""

from __future__ import annotations

import os
import sys

# (no typing, and procscope.core.guard, which imports OpenTelemetry, where it is used:
# procscope run's launcher imports this module for INSTRUMENTORS alone)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# entry point name -> (module, class); the names match pyproject entry points.
INSTRUMENTORS: dict[str, tuple[str, str]] = {
    "procscope_lifecycle": ("procscope.instrumentation.lifecycle", "LifecycleInstrumentor"),
    "procscope_messaging": ("procscope.instrumentation.messaging", "MessagingInstrumentor"),
    "procscope_state": ("procscope.instrumentation.state", "StateInstrumentor"),
}

# The lifecycle instrumentor is on at every level but "off": besides its own spans it
# carries settings and trace context into child processes, which the other levels need.
# What it records at each level is its own decision (it reads the live level).
LEVEL_INSTRUMENTORS: dict[str, tuple[str, ...]] = {
    "full": ("procscope_lifecycle", "procscope_messaging", "procscope_state"),
    "messages_only": ("procscope_lifecycle", "procscope_messaging"),
    "states_only": ("procscope_lifecycle", "procscope_state"),
    "minimal": ("procscope_lifecycle",),
    "off": (),
}


def disabled_by_environment() -> set[str]:
    """Names in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, which procscope honours too."""
    raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def wanted(level: str) -> list[str]:
    disabled = disabled_by_environment()
    if "*" in disabled:
        return []
    return [name for name in LEVEL_INSTRUMENTORS[level] if name not in disabled]


def switch(name: str) -> Any:
    """The plugin's own switch (``instrument``, ``uninstrument``, ``is_on``): what its
    instrumentor class switches through, without importing that class's base
    (OpenTelemetry's ``BaseInstrumentor`` and what it imports: tens of milliseconds in
    every process procscope starts in)."""
    import importlib  # (here: a cheap child's start-up imports this module)

    return importlib.import_module(INSTRUMENTORS[name][0] + "._switch")


def apply_level(level: str, tracer_provider: Any) -> None:
    """Instrument what ``level`` wants and uninstrument the rest (both are idempotent)."""
    on = set(wanted(level))
    for name in INSTRUMENTORS:
        if name not in on and INSTRUMENTORS[name][0] not in sys.modules:
            # Never imported, so never instrumented: importing it just to switch it off
            # would cost every spawn and forkserver child tens of milliseconds.
            continue
        try:
            plugin = switch(name)
            if name in on:
                plugin.instrument(tracer_provider=tracer_provider)
            else:
                plugin.uninstrument()
        except Exception as exc:  # noqa: BLE001 -- one broken plugin must not stop the rest
            from procscope.core.guard import warn_once

            warn_once(
                f"instrumentor-failed:{name}",
                "procscope: instrumentor %s could not be switched (%s: %s)",
                name,
                type(exc).__name__,
                exc,
            )


def uninstrument_all() -> None:
    apply_level("off", None)
