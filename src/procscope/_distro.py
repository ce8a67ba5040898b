"""Auto-launch: procscope's OpenTelemetry distro and configurator.

``opentelemetry-instrument python app.py`` (and ``procscope run``) loads the distro named
by OTEL_PYTHON_DISTRO, or the first one installed; then the configurator named by
OTEL_PYTHON_CONFIGURATOR, or the first one; then every ``opentelemetry_instrumentor``
entry point not listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from ._configurator import ProcscopeConfigurator, configure_environment
from ._instrumentors import INSTRUMENTORS

__all__ = ["ProcscopeConfigurator", "ProcscopeDistro"]


class ProcscopeDistro(BaseDistro):
    """Makes procscope's configurator the one that runs, and tracedb the default exporter."""

    def _configure(self, **kwargs: Any) -> None:
        configure_environment()

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        from ._mcp import is_server_process

        if is_server_process():
            return  # `procscope mcp` records nothing of itself, nor patches anything
        if entry_point.name in INSTRUMENTORS:
            from ._api import current_scope

            if current_scope() is not None:
                # setup() already switched procscope's instrumentors on as the level
                # asks (honouring OTEL_PYTHON_DISABLED_INSTRUMENTATIONS); turning on one
                # that the level leaves off would override the user's setting.
                return
        super().load_instrumentor(entry_point, **kwargs)
