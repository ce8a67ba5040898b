"""Switching state recording on and off, without OpenTelemetry's instrumentor base class
(see the lifecycle plugin's ``_switch`` for why); the public ``StateInstrumentor``
switches through the same functions."""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Any

from procscope.core.post_import import when_imported

from . import _runtime, _transitions
from ._runtime import RT
from .package import __version__, _instruments_transitions

_logger = logging.getLogger("procscope")
_on = False
_cancel_transitions: Any = None
# Whether the transitions recorder was switched on by this switch (and so is switched
# off with it), rather than by the program through TransitionsInstrumentor.
_owns_transitions = False


def is_on() -> bool:
    return _on


def instrument(**kwargs: Any) -> None:
    """Switch state recording on (idempotent); with the transitions library installed,
    its transitions too."""
    global _on
    if _on:
        return
    _runtime.configure(kwargs, __version__)
    RT.generation += 1
    RT.active = True
    _transitions._Switch.owns_runtime = False  # the runtime is this switch's from now on
    _on = True
    _instrument_transitions(kwargs)


def uninstrument(**_: Any) -> None:
    global _on, _owns_transitions, _cancel_transitions
    if not _on:
        return
    _on = False
    if _cancel_transitions is not None:
        _cancel_transitions()
        _cancel_transitions = None
    RT.active = False
    if _owns_transitions:
        _owns_transitions = False
        if _transitions._Switch.on:
            _transitions.uninstrument()


def transitions_missing() -> str | None:
    """Why the transitions library cannot be recorded (absent, or older than the
    plugin's requirement), or None. Read from the installed distribution's version, as
    OpenTelemetry's dependency check does, without importing its checker (packaging),
    and without reading any metadata where the library is not importable at all."""
    if importlib.util.find_spec("transitions") is None:
        return "transitions is not installed"
    from importlib import metadata

    try:
        installed = metadata.version("transitions")
    except metadata.PackageNotFoundError:
        return "transitions is not installed"
    required = _instruments_transitions[0].split(">=", 1)[1].strip()
    if _release(installed) < _release(required):
        return f"transitions {installed} is installed; procscope needs {required} or later"
    return None


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def _instrument_transitions(kwargs: dict[str, Any]) -> None:
    """Record the transitions library once the program imports it (now, if it has):
    importing it here would cost every process its import (~15 ms, asyncio included)."""
    global _cancel_transitions
    provider = kwargs.get("tracer_provider")

    def instrument_now(_transitions_module: Any) -> None:
        global _owns_transitions
        if not _on or _transitions._Switch.on:
            return
        missing = transitions_missing()
        if missing is not None:
            # As auto-launch does for a library that is absent: a debug line, no error.
            _logger.debug("procscope: transitions not recorded: %s", missing)
            return
        _transitions.instrument(tracer_provider=provider)
        _owns_transitions = True

    if importlib.util.find_spec("transitions") is None:
        _logger.debug("procscope: transitions not recorded: transitions is not installed")
        return
    _cancel_transitions = when_imported("transitions", instrument_now)
