"""procscope: see inside a concurrent Python program, as OpenTelemetry spans and events.

Processes, threads and asyncio tasks (how they are born and die), the messages they pass
through queues and pipes, and the state changes of long-lived objects, recorded into a
local trace DB or sent anywhere OTLP goes.
"""

from __future__ import annotations

# In a development checkout every distribution has its own ``src/procscope`` folder;
# extend_path lets ``procscope.instrumentation`` and friends, installed editable from
# their own folders, be found under this regular package. Installed from wheels they all
# share one folder and this is a no-op.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from procscope.core.settings import SettingWarning

from ._api import configure, name, setup, shutdown, trace_state
from ._scope import Scope
from ._version import __version__

__all__ = [
    "Scope",
    "SettingWarning",
    "__version__",
    "configure",
    "name",
    "setup",
    "shutdown",
    "trace_state",
]
