"""Auto-launch without OpenTelemetry's distro machinery: procscope's configurator, and
what procscope's distro sets in the environment before it.

Kept apart from :mod:`procscope._distro` because importing OpenTelemetry's ``BaseDistro``
imports its instrumentor base, its semantic-convention helpers, wrapt, asyncio,
importlib.metadata and packaging: about 80 ms in every Python that ``procscope run``
starts. The fast start (:mod:`procscope._autostart`) needs only what is here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from procscope.core.guard import handle_internal_errors

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


def configure_environment() -> None:
    """What procscope's distro does when OpenTelemetry configures it."""
    # The distro is configured before any configurator is chosen, so naming ours here
    # settles which configurator runs when opentelemetry-distro is installed too.
    os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "procscope")
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "tracedb")
    if os.environ["OTEL_PYTHON_CONFIGURATOR"] == "procscope":
        logging.getLogger(_AUTO_LOAD_LOGGER).addFilter(_OurChoiceOfConfigurator())


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
