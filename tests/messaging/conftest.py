"""Fixtures of the messaging tests: an instrumented in-memory tracer, and programs to run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from procscope.core import shared_state
from procscope.core.recorder import RecordingSpanProcessor
from procscope.instrumentation.messaging import MessagingInstrumentor

REPO = Path(__file__).resolve().parents[2]


class Recorder:
    """The instrumented provider of one test and what it recorded."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        # Messages are records, made into spans by the recorder's drain thread: as
        # procscope's own pipeline has it (see procscope.core.recorder).
        self.recording = RecordingSpanProcessor([SimpleSpanProcessor(self.exporter)])
        self.provider.add_span_processor(self.recording)
        self.tracer = self.provider.get_tracer("tests.messaging")

    def finished(self) -> list[Any]:
        """Every span finished so far, records included (the documented flush first)."""
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def spans(self, name_prefix: str | None = None) -> list[Any]:
        spans = self.finished()
        if name_prefix is not None:
            spans = [s for s in spans if s.name.startswith(name_prefix)]
        return spans

    def messaging(self, operation_type: str) -> list[Any]:
        return [
            s for s in self.finished()
            if (s.attributes or {}).get("messaging.operation.type") == operation_type
        ]


@pytest.fixture
def live_settings() -> Iterator[Any]:
    """The process's live settings, restored after the test."""
    live = shared_state.settings()
    saved = (live.sample_rate, live.capture_content, live.level)
    live.sample_rate, live.capture_content = 1.0, True
    yield live
    live.sample_rate, live.capture_content, live.level = saved


@pytest.fixture
def recorder(live_settings: Any) -> Iterator[Recorder]:
    """The messaging instrumentor on, recording into memory; off again afterwards."""
    rec = Recorder()
    instrumentor = MessagingInstrumentor()
    instrumentor.instrument(tracer_provider=rec.provider)
    try:
        yield rec
    finally:
        instrumentor.uninstrument()
        rec.provider.shutdown()


@pytest.fixture
def run_program(tmp_path: Path) -> Any:
    """Run a Python program (source text) in a fresh interpreter; return the result."""

    def run(source: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        script = tmp_path / "program.py"
        script.write_text(textwrap.dedent(source))
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
        environ["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
        environ.update(env or {})
        return subprocess.run(
            [sys.executable, str(script), *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
