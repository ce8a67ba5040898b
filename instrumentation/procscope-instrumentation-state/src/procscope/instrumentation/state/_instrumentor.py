"""``StateInstrumentor`` and ``TransitionsInstrumentor``: the state plugin's switches as
OpenTelemetry instrumentors (``procscope.setup()`` uses ``._switch`` directly)."""

from __future__ import annotations

from collections.abc import Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from procscope.core.switched import Switched

from . import _switch, _transitions
from .package import _instruments, _instruments_transitions


class StateInstrumentor(Switched, BaseInstrumentor):  # type: ignore[misc]
    """Switches state recording on and off (entry point ``procscope_state``).

    Keywords of :meth:`instrument` (each also an environment variable):
    ``tracer_provider``; ``snapshot_every`` (``PROCSCOPE_STATE_SNAPSHOT_EVERY``, default
    100 changes); ``events`` (``PROCSCOPE_STATE_EVENTS``: ``span``, the default, or ``log``
    for LogRecord events, with ``logger_provider``); ``max_depth`` and ``max_items``
    (``PROCSCOPE_STATE_MAX_DEPTH``/``_MAX_ITEMS``: how deep and how large nested
    containers are diffed, default 3 and 1000).
    """

    switch = _switch

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments


class TransitionsInstrumentor(Switched, BaseInstrumentor):  # type: ignore[misc]
    """Records the transitions of every ``transitions`` state machine.

    Switched on by :class:`StateInstrumentor` when the library is installed; usable
    alone too (it then configures the state runtime).
    """

    switch = _transitions

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments_transitions
