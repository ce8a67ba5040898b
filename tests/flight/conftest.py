"""Helpers for the flight recorder tests: run a real program, read the DB with the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

CLI = str(Path(sys.executable).parent / "procscope")


def clean_environ(**more: str) -> dict[str, str]:
    """The test's environment without procscope or OTel settings, plus ``more``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROCSCOPE_", "OTEL_")) or k == "PROCSCOPE_RAISE_INTERNAL_ERRORS"}
    env.update(more)
    return env


def run_program(tmp_path: Path, source: str, *args: str, timeout: float = 60,
                **env: str) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to a file under ``tmp_path`` and run it with this Python."""
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(program), *args], capture_output=True, text=True,
        timeout=timeout, cwd=tmp_path, env=clean_environ(**env),
    )


def cli(*args: str) -> Any:
    """``procscope ARGS --json``, parsed."""
    done = subprocess.run([CLI, *args, "--json"], capture_output=True, text=True, timeout=60,
                          env=clean_environ())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cli_text(*args: str) -> str:
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                          env=clean_environ())
    assert done.returncode == 0, done.stderr
    return done.stdout


def contents_received_by(db: Path, receiver: str) -> list[str]:
    """The content of each message ``receiver`` got, in the order it got them."""
    rows = cli("messages", "--db", str(db), "--to", receiver, "--limit", "100000")
    rows.sort(key=lambda row: row["received_ns"] or 0)
    return [str(row["content"]) for row in rows]


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def start_method(request: pytest.FixtureRequest) -> str:
    if sys.platform == "win32" and request.param != "spawn":
        pytest.skip("fork and forkserver are POSIX")
    return str(request.param)
