"""What the state instrumentor instruments, the way OpenTelemetry instrumentors say it.

``_instruments`` is empty: tracing plain classes with ``trace_state`` needs no library, so
nothing may make auto-launch skip the ``procscope_state`` entry point. (Auto-launch checks
the *distribution's* ``instruments`` extra for the whole entry point; listing
``transitions`` there would switch plain-class tracing off wherever transitions is absent.)

The optional part, recording every transition of the ``transitions`` library, declares its
own requirement in ``_instruments_transitions``; :class:`TransitionsInstrumentor` returns it
from ``instrumentation_dependencies()``, and the state instrumentor checks it with
OpenTelemetry's ``get_dependency_conflicts`` before switching that part on, skipping it
with a debug log (as auto-launch does) when the library is absent or too old.
"""

from __future__ import annotations

_instruments: tuple[str, ...] = ()
_instruments_transitions: tuple[str, ...] = ("transitions >= 0.9",)

__version__ = "0.1.0"
