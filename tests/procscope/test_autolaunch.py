"""Auto-launch: ``opentelemetry-instrument python app.py`` with procscope installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
INSTRUMENT = [str(BIN / "opentelemetry-instrument"), "python"]

REPORT = """
import os
from opentelemetry import trace
from procscope._api import current_scope
from procscope.instrumentation.lifecycle import LifecycleInstrumentor
from procscope.instrumentation.messaging import MessagingInstrumentor
from procscope.instrumentation.state import StateInstrumentor
scope = current_scope()
print("scope", scope is not None and scope.settings.exporters)
print("instrumented",
      LifecycleInstrumentor().is_instrumented_by_opentelemetry,
      MessagingInstrumentor().is_instrumented_by_opentelemetry,
      StateInstrumentor().is_instrumented_by_opentelemetry)
with trace.get_tracer("app").start_as_current_span("auto-launched"):
    pass
"""


def _path_env(**extra: str) -> dict[str, str]:
    # opentelemetry-instrument runs `python` from PATH, as a user's shell would.
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def test_auto_launch_sets_up_procscope_and_its_instrumentors(run_app: Any, spans_in: Any) -> None:
    """Our distro and configurator run setup(); the three instrumentors are on."""
    result = run_app(
        REPORT,
        prefix=INSTRUMENT,
        env=_path_env(OTEL_PYTHON_DISTRO="procscope", OTEL_TRACES_EXPORTER="console"),
    )
    assert result.returncode == 0, result.stderr
    assert "scope ('console',)" in result.stdout
    assert "instrumented True True True" in result.stdout
    spans = spans_in(result.stdout)
    # The program's own span, then the record of how it ended (exit code 0).
    assert [s["name"] for s in spans] == ["auto-launched", "end app.py"]
    assert spans[1]["attributes"]["process.exit.code"] == 0
    assert "already instrumented" not in result.stderr
    assert "not loaded" not in result.stderr  # opentelemetry-distro is installed here too


def test_auto_launch_disabled_instrumentation(run_app: Any) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=procscope_messaging turns only that one off."""
    result = run_app(
        REPORT,
        prefix=INSTRUMENT,
        env=_path_env(
            OTEL_PYTHON_DISTRO="procscope",
            OTEL_TRACES_EXPORTER="none",
            OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="procscope_messaging",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "instrumented True False True" in result.stdout


@pytest.mark.parametrize("exporter", ["console", "none"])
def test_auto_launch_exporter_choice(run_app: Any, spans_in: Any, exporter: str) -> None:
    """OTEL_TRACES_EXPORTER chooses where spans go; none records nowhere, without error."""
    result = run_app(
        REPORT,
        prefix=INSTRUMENT,
        env=_path_env(OTEL_PYTHON_DISTRO="procscope", OTEL_TRACES_EXPORTER=exporter),
    )
    assert result.returncode == 0, result.stderr
    # With console: the program's span and the record of its end.
    assert len(spans_in(result.stdout)) == (2 if exporter == "console" else 0)


def test_auto_launch_default_exporter_is_the_trace_db(run_app: Any, tmp_path: Path) -> None:
    """With no exporter named, spans land in ./procscope.db of the working directory."""
    result = run_app(REPORT, prefix=INSTRUMENT, env=_path_env(OTEL_PYTHON_DISTRO="procscope"))
    assert result.returncode == 0, result.stderr
    from procscope.exporters.tracedb import TraceDB

    names = [span.name for span in TraceDB(str(tmp_path / "procscope.db")).spans()]
    assert "auto-launched" in names


def test_opentelemetry_distro_chosen_by_name(run_app: Any) -> None:
    """With opentelemetry-distro installed too, OTEL_PYTHON_DISTRO picks which one runs.

    OpenTelemetry's distro then makes OTLP the default exporter; procscope's configurator
    still runs when it is the first one found or is named by OTEL_PYTHON_CONFIGURATOR.
    """
    result = run_app(
        'import os; print("exporter", os.environ.get("OTEL_TRACES_EXPORTER"))\n' + REPORT,
        prefix=INSTRUMENT,
        env=_path_env(
            OTEL_PYTHON_DISTRO="distro",
            OTEL_PYTHON_CONFIGURATOR="procscope",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
            OTEL_EXPORTER_OTLP_TIMEOUT="1",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "exporter otlp" in result.stdout  # set by opentelemetry-distro, not by ours
    assert "scope ('otlp',)" in result.stdout
