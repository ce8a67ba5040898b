"""Fixtures for the root distribution's tests: real programs in real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent


def clean_environ(**overrides: str) -> dict[str, str]:
    """The test's environment without any procscope or OpenTelemetry setting in it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("OTEL_") or k.startswith("PROCSCOPE_") or k == "TRACEPARENT")
    }
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def console_spans(stdout: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (JSON objects, one after the other)."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while True:
        start = stdout.find("{", index)
        if start < 0:
            return spans
        try:
            obj, index = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj and "name" in obj:
            spans.append(obj)


@pytest.fixture
def write_app(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a program into the test's folder and return its path."""

    def write(code: str, name: str = "app.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(code))
        return path

    return write


@pytest.fixture
def run_app(tmp_path: Path, write_app: Callable[[str, str], Path]) -> Callable[..., Any]:
    """Run a program with this interpreter in a clean environment; return the result."""

    def run(
        code: str,
        *,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        app = write_app(code)
        command = [*(prefix or [sys.executable]), str(app)]
        return subprocess.run(
            command,
            cwd=tmp_path,
            env=clean_environ(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def spans_in() -> Callable[[str], list[dict[str, Any]]]:
    """Parse the spans ConsoleSpanExporter printed to a program's stdout."""
    return console_spans


def _default_sigint() -> None:
    # A test suite started as a background job of a shell without job control (nohup,
    # `cmd &` in a script) inherits SIGINT ignored, and so would the program, whatever
    # procscope does: the tests about signals start it with the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def start_app(tmp_path: Path, write_app: Callable[[str, str], Path]) -> Callable[..., Any]:
    """Start a program (this interpreter, clean environment) and return its Popen."""

    def start(
        code: str, *, env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> subprocess.Popen[str]:
        app = write_app(code)
        return subprocess.Popen(
            [*(prefix or [sys.executable]), str(app)],
            cwd=tmp_path,
            env=clean_environ(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )

    return start


# A small real recording, made once per test session (per pytest worker) for the CLI's
# read-command tests: a spawned worker process (with a child of its own) and a queue
# whose names carry terminal control sequences, a message, a thread, and a traced object
# with an int, a long text and a name with control characters.
WEIRD = "proc\x1b]0;PWNED\x07\x1b[2J"
LONG_NOTE = "N" * 300 + "-END"
_RECORDED_PROGRAM = f"""
import multiprocessing as mp
import threading

from opentelemetry import trace

import procscope

WEIRD = {WEIRD!r}


class Account:
    def __init__(self):
        self.balance = 0
        self.note = ""
        self.label = ""


def rest():
    pass


def work(jobs):
    grandchild = mp.get_context("spawn").Process(target=rest, name="grandchild")
    grandchild.start()
    grandchild.join()
    account = procscope.trace_state(Account(), name="account")
    message = jobs.get()
    account.balance = 5
    account.note = {LONG_NOTE!r}
    account.label = message


if __name__ == "__main__":
    with trace.get_tracer("tests").start_as_current_span("job " + WEIRD):
        ctx = mp.get_context("spawn")
        jobs = procscope.name(ctx.Queue(), "jobs" + WEIRD)
        worker = ctx.Process(target=work, args=(jobs,), name="worker" + WEIRD)
        worker.start()
        jobs.put("hello" + WEIRD)
        helper = threading.Thread(target=lambda: None, name="helper")
        helper.start()
        helper.join()
        worker.join()
"""


@pytest.fixture(scope="session")
def recorded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trace DB recorded by `procscope run` from a small real program (see above)."""
    folder = tmp_path_factory.mktemp("recorded")
    app = folder / "app.py"
    app.write_text(_RECORDED_PROGRAM)
    db = folder / "procscope.db"
    done = subprocess.run(
        [str(BIN / "procscope"), "run", "--db", str(db), "--", sys.executable, str(app)],
        cwd=folder,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return db
