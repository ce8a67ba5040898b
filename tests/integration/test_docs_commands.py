"""Every command shown in the documentation runs, with the exit status its example implies.

The rules (also in docs/development.md, "Docs are tested"):

- Commands are every line of ```sh / ```bash / ```shell blocks (backslash continuations
  joined, comments and blank lines ignored), and every line starting with "$ " in any other
  block; the lines after a "$ " line, up to the next "$ " line, are its example output.
- Each command runs with bash in a fresh copy of a sandbox folder: examples/ copied from the
  repository, APP (below) as app.py, demo.db recorded by `procscope demo --db demo.db`, and
  procscope.db recorded by `procscope run -- python app.py`. PATH starts with this venv's bin,
  no OTEL_*/PROCSCOPE_* variables come from outside, PROCSCOPE_RAISE_INTERNAL_ERRORS=1.
- Placeholders: TRACE_ID becomes the id of the demo's trace, HH:MM:SS an instant (ISO 8601,
  UTC) just after the demo's ledger last changed.
- `procscope demo --db FILE` runs in a sandbox without FILE (the demo only writes new files).
- `make X` is checked with `make -n X` from the repository root (the target exists, the
  Makefile parses); the test suite is never run recursively.
- Expected exit status: 2 when the example output's first line is a one-line procscope
  error (`procscope <cmd>: cannot ...`, and then stderr must be that one line), else 0.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
VENV_BIN = Path(sys.executable).parent
SHELL_LANGS = {"sh", "bash", "shell"}
COMMAND_TIMEOUT_S = 60
ERROR_LINE = re.compile(r"^procscope [\w-]+: cannot ")
FENCE_OPEN = re.compile(r"^(\s*)```\s*([\w+-]*)")
FENCE_CLOSE = re.compile(r"^\s*```\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")

# The program the docs call app.py: a process and the parent passing messages on queues.
APP = '''\
"""A small concurrent program: a worker process squares the numbers it is sent."""

import multiprocessing as mp


def work(jobs, results):
    for number in iter(jobs.get, None):
        results.put(number * number)


if __name__ == "__main__":
    jobs = mp.Queue()
    results = mp.Queue()
    worker = mp.Process(target=work, args=(jobs, results), name="worker")
    worker.start()
    for number in range(3):
        jobs.put(number)
    jobs.put(None)
    print(sorted(results.get() for _ in range(3)))
    worker.join()
'''


class DocCommand(NamedTuple):
    doc: str  # path relative to the repository
    line: int  # 1-based line of the command (its first line when continued)
    command: str
    output: list[str]  # the example output shown after a "$ " command


def _blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, 1-based line of the block's first content line, its lines de-indented)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE_OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, lang = len(opened.group(1)), opened.group(2)
        j = i + 1
        while j < len(lines) and not FENCE_CLOSE.match(lines[j]):
            j += 1
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1 : j]]
        yield lang, i + 2, body
        i = j + 1


def doc_commands(path: Path) -> list[DocCommand]:
    """The commands of one Markdown file, by the rules in this module's docstring."""
    doc = str(path.relative_to(REPO))
    found: list[DocCommand] = []
    for lang, first, body in _blocks(path.read_text(encoding="utf-8")):
        if lang in SHELL_LANGS:
            pending, start = "", 0
            for k, line in enumerate(body):
                stripped = line.strip()
                if not pending and (not stripped or stripped.startswith("#")):
                    continue
                if not pending:
                    start = first + k
                if stripped.endswith("\\"):
                    pending += stripped[:-1] + " "
                    continue
                found.append(DocCommand(doc, start, pending + stripped, []))
                pending = ""
            continue
        current: DocCommand | None = None
        for k, line in enumerate(body):
            if line.startswith("$ "):
                current = DocCommand(doc, first + k, line[2:].strip(), [])
                found.append(current)
            elif current is not None:
                current.output.append(line)
    return found


ALL_COMMANDS = [cmd for path in DOC_FILES for cmd in doc_commands(path)]


def clean_env() -> dict[str, str]:
    """The environment a reader's shell would have: ours, minus procscope's and OTel's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


class Sandbox(NamedTuple):
    template: Path
    placeholders: dict[str, str]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """The prepared folder every command's copy starts from, and the placeholders' values."""
    template = tmp_path_factory.mktemp("docs-sandbox")
    shutil.copytree(REPO / "examples", template / "examples")
    (template / "app.py").write_text(APP, encoding="utf-8")
    for setup in ("procscope demo --db demo.db", "procscope run -- python app.py"):
        done = run(setup, template)
        assert done.returncode == 0, f"{setup}: exit {done.returncode}\n{done.stderr}"
    traces = json.loads(run("procscope traces --db demo.db --json", template).stdout)["traces"]
    ledger = json.loads(run("procscope state ledger --db demo.db --json", template).stdout)
    last_change_s = ledger["history"][-1]["time_ns"] // 1000 / 1e6
    instant = datetime.datetime.fromtimestamp(last_change_s + 1e-3, datetime.timezone.utc)
    return Sandbox(template, {"TRACE_ID": traces[0]["trace_id"], "HH:MM:SS": instant.isoformat()})


def test_docs_have_commands() -> None:
    """The extraction finds the commands of the pages that show some (guards the parser itself)."""
    docs = {cmd.doc for cmd in ALL_COMMANDS}
    assert {"README.md", "docs/index.md", "docs/tracedb.md"} <= docs
    assert any(cmd.output and ERROR_LINE.match(cmd.output[0]) for cmd in ALL_COMMANDS)


@pytest.mark.parametrize("cmd", [pytest.param(c, id=f"{c.doc}:{c.line}") for c in ALL_COMMANDS])
def test_doc_command_runs(cmd: DocCommand, sandbox: Sandbox, tmp_path: Path) -> None:
    """The command exits as its example says (0, or 2 with one error line) in a fresh sandbox."""
    command = cmd.command
    if command.startswith("make "):
        done = run("make -n " + command[len("make ") :], REPO)
        assert done.returncode == 0, f"{cmd.doc}:{cmd.line}: {command}\n{done.stderr}"
        return
    for placeholder, value in sandbox.placeholders.items():
        command = command.replace(placeholder, value)
    work = tmp_path / "sandbox"
    shutil.copytree(sandbox.template, work)
    words = shlex.split(command, comments=True)
    if words[:2] == ["procscope", "demo"] and "--db" in words:
        (work / words[words.index("--db") + 1]).unlink(missing_ok=True)
    done = run(command, work)
    where = f"{cmd.doc}:{cmd.line}: {command}\nstdout:\n{done.stdout[-3000:]}"
    where += f"\nstderr:\n{done.stderr[-3000:]}"
    if cmd.output and ERROR_LINE.match(cmd.output[0]):
        assert done.returncode == 2, where
        assert len(done.stderr.strip().splitlines()) == 1, where
        assert done.stderr.startswith(cmd.output[0].split(": cannot ")[0] + ": cannot "), where
    else:
        assert done.returncode == 0, where


def _links(path: Path) -> Iterator[tuple[int, str]]:
    in_code = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE_OPEN.match(line) or FENCE_CLOSE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            for target in LINK.findall(line):
                yield number, target


def test_relative_links_resolve() -> None:
    """Every relative link in docs/*.md and README.md points to a file that exists."""
    broken = []
    for path in DOC_FILES:
        for number, target in _links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(REPO)}:{number}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
