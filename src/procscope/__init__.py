"""procscope: see inside a concurrent Python program, as OpenTelemetry spans and events.

Processes, threads and asyncio tasks (how they are born and die), the messages they pass
through queues and pipes, and the state changes of long-lived objects, recorded into a
local trace DB or sent anywhere OTLP goes.
"""

from __future__ import annotations

# In a development checkout every distribution has its own ``src/procscope`` folder; this
# lets ``procscope.instrumentation`` and friends, installed editable from their own
# folders, be found under this regular package (see _package_path.py).
from ._package_path import extend_path

__path__ = extend_path(__path__)

from procscope.core.lazy import lazy_attributes

from ._version import __version__

# (not typing's: importing typing cost procscope run's launcher a few ms; type checkers
# read this name as typing.TYPE_CHECKING)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from procscope.core.settings import SettingWarning

    from ._api import configure, dump, name, setup, shutdown, trace_state
    from ._scope import Scope

# Imported at first use, not with the package: every ``procscope.*`` import (a plugin's
# ``procscope.core``, the CLI, the start-up hook in each child) runs this file first, and
# the API's modules bring in the OpenTelemetry SDK (tens of milliseconds).
_LAZY = {
    "configure": "procscope._api",
    "dump": "procscope._api",
    "name": "procscope._api",
    "setup": "procscope._api",
    "shutdown": "procscope._api",
    "trace_state": "procscope._api",
    "Scope": "procscope._scope",
    "SettingWarning": "procscope.core.settings",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Scope",
    "SettingWarning",
    "__version__",
    "configure",
    "dump",
    "name",
    "setup",
    "shutdown",
    "trace_state",
]
