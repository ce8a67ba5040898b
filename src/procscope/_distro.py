"""Auto-launch: procscope's OpenTelemetry distro and configurator.

``opentelemetry-instrument python app.py`` (and ``procscope run``) loads the distro named
by OTEL_PYTHON_DISTRO, or the first one installed; then the configurator named by
OTEL_PYTHON_CONFIGURATOR, or the first one; then every ``opentelemetry_instrumentor``
entry point not listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from procscope.core.guard import handle_internal_errors

from ._instrumentors import INSTRUMENTORS

_AUTO_LOAD_LOGGER = "opentelemetry.instrumentation.auto_instrumentation._load"


class _OurChoiceOfConfigurator(logging.Filter):
    """Drops OpenTelemetry's notice that another configurator was skipped for ours.

    With opentelemetry-distro installed too, every process would log "Configuration of
    configurator not loaded, procscope already loaded": the outcome our distro asked for,
    repeated in every child, not a problem to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Configuration of %s not loaded, %s already loaded"
            and isinstance(record.args, tuple)
            and record.args[-1:] == ("procscope",)
        )


class ProcscopeDistro(BaseDistro):
    """Makes procscope's configurator the one that runs, and tracedb the default exporter."""

    def _configure(self, **kwargs: Any) -> None:
        # The distro is configured before any configurator is chosen, so naming ours here
        # settles which configurator runs when opentelemetry-distro is installed too.
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "procscope")
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "tracedb")
        if os.environ["OTEL_PYTHON_CONFIGURATOR"] == "procscope":
            logging.getLogger(_AUTO_LOAD_LOGGER).addFilter(_OurChoiceOfConfigurator())

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


class ProcscopeConfigurator:
    """Runs ``procscope.setup()`` from the environment.

    OpenTelemetry's auto-instrumentation calls ``configure(**kwargs)`` on the object the
    ``opentelemetry_configurator`` entry point makes: that protocol, and the SDK's
    ``_BaseConfigurator``'s one instance per process, are all this class takes from it.
    Not a subclass: ``opentelemetry.sdk._configuration`` imports the metrics and logs
    SDKs (about 60 ms) into every process that ``procscope run`` starts, for nothing.
    """

    _instance: ProcscopeConfigurator | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> ProcscopeConfigurator:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def configure(self, **kwargs: Any) -> None:
        """Configure procscope (called by OpenTelemetry's auto-instrumentation)."""
        self._configure(**kwargs)

    def _configure(self, **kwargs: Any) -> None:
        from ._api import setup
        from ._mcp import is_server_process

        if is_server_process():
            return  # `procscope mcp` records nothing of itself (see is_server_process)
        with handle_internal_errors():
            setup()
