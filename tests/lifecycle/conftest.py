"""Fixtures of the lifecycle tests.

* ``memory``: the instrumentor switched on with an in-memory SDK pipeline (in-process
  assertions on threads, tasks and pools of threads).
* ``run_program``: a real program run in its own interpreter with ``procscope.setup()``
  writing to a trace DB in tmp_path; the test reads the DB (and the JSON lines the
  program printed). Multi-process assertions are made this way, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from procscope.core import shared_state
from procscope.core.recorder import RecordingSpanProcessor
from procscope.instrumentation.lifecycle import LifecycleInstrumentor


@dataclass
class Memory:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self, kind: str | None = None) -> list[ReadableSpan]:
        self.provider.force_flush()  # the recorder's records first (the documented flush)
        found = list(self.exporter.get_finished_spans())
        if kind is not None:
            found = [
                s for s in found if (s.attributes or {}).get("procscope.lifecycle.kind") == kind
            ]
        return found

    def tracer(self) -> Any:
        return self.provider.get_tracer("tests.lifecycle")


@pytest.fixture
def set_level() -> Iterator[Any]:
    """Set the live level for one test (as procscope.configure would), then restore it."""
    live = shared_state.settings()
    before = (live.level, live.sample_rate)

    def set_it(level: str = "full", sample_rate: float = 1.0) -> None:
        live.level = level
        live.sample_rate = sample_rate

    yield set_it
    live.level, live.sample_rate = before


@pytest.fixture
def instrument(set_level: Any) -> Iterator[Any]:
    """Switch the instrumentor on with an in-memory pipeline; off again afterwards."""
    made: list[Memory] = []

    def switch_on(**kwargs: Any) -> Memory:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        # Spans are records made into spans off the calling thread, as in procscope's
        # own pipeline (procscope.core.recorder).
        provider.add_span_processor(RecordingSpanProcessor([SimpleSpanProcessor(exporter)]))
        LifecycleInstrumentor().instrument(tracer_provider=provider, **kwargs)
        made.append(Memory(provider, exporter))
        return made[-1]

    set_level("full")
    yield switch_on
    LifecycleInstrumentor().uninstrument()
    for memory in made:
        memory.provider.shutdown()


@pytest.fixture
def memory(instrument: Any) -> Memory:
    """The instrumentor on, a span for every thread and task (spans="all")."""
    return instrument(spans="all")  # type: ignore[no-any-return]


PRELUDE = """\
import json, os, sys, time
import procscope
from opentelemetry import trace

def emit(**fields):
    print(json.dumps(fields), flush=True)

tracer = trace.get_tracer("tests.lifecycle.program")
"""


@dataclass
class Run:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str
    db_path: Path
    _db: Any = field(default=None, repr=False)

    @property
    def db(self) -> Any:
        if self._db is None:
            from procscope.exporters.tracedb import TraceDB

            self._db = TraceDB(self.db_path)
        return self._db

    def line(self, key: str) -> dict[str, Any]:
        for line in self.lines:
            if key in line:
                return line
        raise AssertionError(f"the program printed no line with {key!r}: {self.lines}")

    def by_name(self) -> dict[str, Any]:
        """The process records, by name (names are unique in these programs)."""
        return {r.name: r for r in self.db.processes()}


@pytest.fixture
def run_program(tmp_path: Path) -> Iterator[Any]:
    """Run ``body`` (under ``if __name__ == '__main__'``, after setup()) as a program."""
    runs: list[Run] = []

    def run(
        body: str,
        *,
        helpers: str = "",
        setup: str = 'procscope.setup(db=sys.argv[1], exporter="tracedb")',
        env: dict[str, str] | None = None,
        timeout: float = 90,
    ) -> Run:
        index = len(runs)
        script = tmp_path / f"prog{index}.py"
        db_path = tmp_path / f"trace{index}.db"
        script.write_text(
            PRELUDE
            + textwrap.dedent(helpers)
            + "\n\nif __name__ == '__main__':\n"
            + textwrap.indent(setup + "\n" + textwrap.dedent(body), "    ")
            + "\n    procscope.shutdown()\n"
        )
        child_env = dict(os.environ)
        # Only the lifecycle instrumentor: these tests are about it alone.
        child_env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "procscope_messaging,procscope_state"
        child_env.pop("PROCSCOPE_LIFECYCLE_SPANS", None)
        child_env.update(env or {})
        done = subprocess.run(
            [sys.executable, str(script), str(db_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env,
            cwd=tmp_path,
            check=False,
        )
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        runs.append(Run(done.returncode, lines, done.stderr, db_path))
        return runs[-1]

    yield run
    for finished in runs:
        if finished._db is not None:
            finished._db.close()


@pytest.fixture
def thread_failures(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Collect threads' unhandled exceptions (expected in the test) via threading.excepthook."""
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    return failures


@pytest.fixture
def run_plain_and_traced(run_program: Any) -> Any:
    """Run a program twice: plainly (procscope imported, not set up), then under
    procscope.setup(); returns both runs, to compare what the program itself saw."""

    def run_both(body: str, **kwargs: Any) -> tuple[Run, Run]:
        plain = run_program(body, setup="pass", **kwargs)
        traced = run_program(body, **kwargs)
        return plain, traced

    return run_both
