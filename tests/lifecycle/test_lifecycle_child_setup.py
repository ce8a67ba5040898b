"""A child process is set up through procscope-core, never by a plugin importing the
``procscope`` distribution (issue 12, item 1: "setting up a child belongs to the core").

The pipeline builder registers itself with ``procscope.core.child``; the lifecycle
instrumentor hands the parent's registration to spawn and forkserver children with their
launch data, and asks it for a Python subprocess's environment.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = [
    *ROOT.glob("core/*/src"),
    *ROOT.glob("instrumentation/*/src"),
    *ROOT.glob("processors/*/src"),
    *ROOT.glob("exporters/*/src"),
]


# The root distribution's modules and the API names of its package.
ROOT_NAMES = {p.stem for p in (ROOT / "src" / "procscope").iterdir() if p.name.startswith("_")}
ROOT_NAMES |= {"setup", "configure", "shutdown", "name", "trace_state", "Scope"}


def _root_imports(path: Path) -> list[str]:
    """Imports of the procscope distribution's own modules (procscope._api, procscope._cli,
    names of the procscope package itself) in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "procscope":
                modules = [f"procscope.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "procscope" and len(parts) > 1 and parts[1] in ROOT_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}")
    return found


def test_no_plugin_imports_the_procscope_distribution() -> None:
    """No module of core or of a plugin imports the root distribution's modules."""
    assert PLUGIN_SOURCES
    offending = [
        hit
        for source in PLUGIN_SOURCES
        for path in sorted(source.rglob("*.py"))
        for hit in _root_imports(path)
    ]
    assert offending == []


BUILDER = """
import procscope._api


def set_up(settings):
    print("builder", settings["level"], settings["db"] is not None, flush=True)
    procscope._api.set_up_child(settings)


def python_environ(env):
    from procscope._cli._run import instrumented_environ

    env = instrumented_environ(env)
    env["MADE_BY_BUILDER"] = "yes"
    return env
"""

PROGRAM = """
import multiprocessing, subprocess, sys

import procscope
from procscope.core import shared_state


def work():
    settings = shared_state.get().scope_settings
    print("child", settings.level, settings.sample_rate, settings.exporters, flush=True)


if __name__ == "__main__":
    from procscope.core import child

    procscope.setup(level="minimal", sample_rate=0.5, exporter="tracedb", db="t.db")
    # A builder of its own, in place of the one procscope registered: what a child uses.
    child.register(set_up="builder:set_up", python_environ="builder:python_environ")
    for method in ("spawn", "forkserver"):
        process = multiprocessing.get_context(method).Process(target=work)
        process.start()
        process.join()
    subprocess.run(
        [sys.executable, "-c",
         # (queue: a child that records something sets up; one that does not stays
         # cheap, with no pipeline, docs/lifecycle.md)
         "import os, queue; from procscope.core import shared_state; "
         "s = shared_state.get().scope_settings; "
         "print('python', os.environ.get('MADE_BY_BUILDER'), s.level, s.sample_rate)"],
        check=True,
    )
"""


def test_children_are_set_up_by_the_builder_the_parent_registered(tmp_path: Path) -> None:
    """spawn and forkserver children run the parent's registered builder with its
    settings; a Python subprocess gets the environment that builder makes."""
    (tmp_path / "builder.py").write_text(textwrap.dedent(BUILDER))
    (tmp_path / "app.py").write_text(textwrap.dedent(PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "builder minimal True",
        "child minimal 0.5 ('tracedb',)",
        "builder minimal True",
        "child minimal 0.5 ('tracedb',)",
        "python yes minimal 0.5",
    ]
