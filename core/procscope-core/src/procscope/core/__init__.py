"""procscope-core: what every procscope distribution shares, one copy per process.

The plugins depend on this distribution as contrib's instrumentors depend on
``opentelemetry-instrumentation``. Its modules are the plugins' common ground:

- :mod:`.settings`: one parser for keywords and environment variables;
- :mod:`.shared_state`: the live settings and process-wide registries;
- :mod:`.guard`: the internal-error guard at every place user code calls into us;
- :mod:`.saferepr` and :mod:`.scrubbing`: bounded, scrubbed representations of content;
- :mod:`.naming`: names given with ``procscope.name()``;
- :mod:`.head_sampling`: the cheap head-sampling gate;
- :mod:`.forksafe`, :mod:`.patched`, :mod:`.threadinfo`: fork safety, faithful patching,
  thread names without side effects.
"""

from __future__ import annotations

from .lazy import lazy_attributes

TYPE_CHECKING = False  # (not typing's: see procscope/__init__.py)

if TYPE_CHECKING:
    from .guard import handle_internal_errors, log_internal_error, warn_once
    from .naming import get_name, set_name
    from .saferepr import safe_repr
    from .settings import Settings, SettingWarning, resolve

# Imported at first use: ``import procscope.core.settings`` (the CLI, a child's start-up)
# runs this file first, and the guard and saferepr bring in OpenTelemetry's context,
# logging, uuid, platform and dataclasses.
_LAZY = {
    name: f"{__name__}.{module}"
    for module, names in (
        ("guard", ("handle_internal_errors", "log_internal_error", "warn_once")),
        ("naming", ("get_name", "set_name")),
        ("saferepr", ("safe_repr",)),
        ("settings", ("Settings", "SettingWarning", "resolve")),
    )
    for name in names
}
__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "SettingWarning",
    "Settings",
    "get_name",
    "handle_internal_errors",
    "log_internal_error",
    "resolve",
    "safe_repr",
    "set_name",
    "warn_once",
]
