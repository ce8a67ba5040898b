"""A Python child that cannot load procscope (another interpreter, another environment)
runs under ``procscope run`` exactly as it would plainly: nothing on its stderr, and any
sitecustomize of its own still runs."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any

import pytest

PROCSCOPE = str(Path(sys.executable).parent / "procscope")


def _other_python() -> str | None:
    """A CPython that is not this environment's and has no OpenTelemetry installed."""
    for candidate in sorted(glob.glob("/root/.pyenv/versions/3.1[0-9].*/bin/python3")):
        if os.path.realpath(candidate) == os.path.realpath(sys.executable):
            continue
        site = glob.glob(os.path.join(os.path.dirname(candidate), "..", "lib", "python3.*"))
        if site and not glob.glob(os.path.join(site[0], "site-packages", "opentelemetry")):
            return candidate
    return None


OTHER = _other_python()
pytestmark = pytest.mark.skipif(OTHER is None, reason="no other CPython without OpenTelemetry")

PROGRAM = """
import os, subprocess, sys
other = os.environ["OTHER_PYTHON"]
print("program: own sitecustomize ran", getattr(sys, "own_site_ran", False))
code = "import sys; print('child ran', getattr(sys, 'own_site_ran', False))"
for command in ([other, "-c", code], f"{other} -c \\"{code}\\""):
    done = subprocess.run(command, shell=isinstance(command, str), capture_output=True,
                          text=True)
    print("stdout", repr(done.stdout), "stderr", repr(done.stderr), "code", done.returncode)
"""


def _run(run_app: Any, tmp_path: Path, *, traced: bool, **env: str) -> Any:
    prefix = [PROCSCOPE, "run", "--db", str(tmp_path / "run.db"), "--"] if traced else []
    return run_app(
        PROGRAM, env={"OTHER_PYTHON": str(OTHER), **env}, prefix=[*prefix, sys.executable]
    )


def test_another_python_child_runs_as_plainly(run_app: Any, tmp_path: Path) -> None:
    """Its output is the plain one, its stderr empty (no 'Error in sitecustomize')."""
    plain = _run(run_app, tmp_path, traced=False)
    traced = _run(run_app, tmp_path, traced=True)
    assert "stdout 'child ran False\\n' stderr '' code 0" in plain.stdout
    assert traced.returncode == 0, traced.stderr
    assert (traced.stdout, traced.stderr) == (plain.stdout, "")


def test_the_programs_own_sitecustomize_still_runs(run_app: Any, tmp_path: Path) -> None:
    """A sitecustomize on the PYTHONPATH the program was given runs in both the program
    (procscope loaded) and the other Python's child (procscope not loadable)."""
    own = tmp_path / "own_site"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import sys\nsys.own_site_ran = True\n")
    plain = _run(run_app, tmp_path, traced=False, PYTHONPATH=str(own))
    traced = _run(run_app, tmp_path, traced=True, PYTHONPATH=str(own))
    assert "program: own sitecustomize ran True" in plain.stdout
    assert "stdout 'child ran True\\n' stderr '' code 0" in plain.stdout
    assert traced.returncode == 0, traced.stderr
    assert (traced.stdout, traced.stderr) == (plain.stdout, "")
