"""``procscope demo``: the bundled example runs under procscope and its recording is shown."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

PROCSCOPE = str(Path(sys.executable).parent / "procscope")


def _procscope(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROCSCOPE, *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def test_demo_records_processes_messages_state_and_the_crash(tmp_path: Path) -> None:
    """The demo's report shows the process tree with the crashed pricer, the orders, the
    ledger's history, and one trace; the DB answers the same questions afterwards."""
    from procscope.exporters.tracedb import TraceDB

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    db = tmp_path / "demo.db"
    result = _procscope("demo", "--db", str(db), env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ledger: 4 orders, total 7.15" in out
    assert "procscope processes --db" in out and "procscope show" in out
    assert "exit 1" in out and "cannot price 'POISON'" in result.stderr

    records = TraceDB(str(db)).processes()
    by_name = {r.name: r for r in records}
    assert {"ledger", "pricer-1", "pricer-2"} <= set(by_name)
    exit_codes = sorted(by_name[n].exit_code for n in ("pricer-1", "pricer-2"))
    assert exit_codes == [0, 1]
    root_pid = by_name["ledger"].parent_pid
    assert all(by_name[n].parent_pid == root_pid for n in ("ledger", "pricer-1", "pricer-2"))

    orders = _procscope("messages", "--db", str(db), "--queue", "orders", "--json", env=env)
    sent = json.loads(orders.stdout)
    assert len(sent) == 7  # five orders and a stop sign for each pricer

    state = _procscope("state", "ledger", "--db", str(db), "--json", env=env)
    history: Any = json.loads(state.stdout)
    assert "7.15" in json.dumps(history)
    # The program's own end: recorded by itself, exit 0, at the top of the tree.
    program = records[0]
    assert (program.kind, program.pid, program.exit_code, program.error) == (
        "program",
        root_pid,
        0,
        False,
    )
    traces = json.loads(
        _procscope("traces", "--db", str(db), "--json", "--all", env=env).stdout
    )["traces"]
    # The pipeline's trace, and the one-span record of the program's end.
    assert sorted(t["root_name"] for t in traces) == ["dispatch orders", "end _demo_app.py"]


def test_demo_refuses_an_existing_db(tmp_path: Path) -> None:
    """The demo never writes into an existing file: exit 2 with one line."""
    existing = tmp_path / "mine.db"
    existing.write_bytes(b"precious")
    result = _procscope("demo", "--db", str(existing), env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "exists" in result.stderr
    assert existing.read_bytes() == b"precious"


def test_demo_ends_with_commands_that_work_as_printed(tmp_path: Path) -> None:
    """Started by a relative path with procscope not on the PATH (as `make demo` starts
    .venv/bin/procscope), the demo ends with commands that run when pasted as printed in
    the same folder: the path it was started by, a real --at time of the run, and how
    to put procscope on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PATH"] = "/usr/bin:/bin"
    started_by = os.path.relpath(PROCSCOPE, tmp_path)
    demo = subprocess.run(
        [started_by, "demo", "--db", "demo.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    ending = demo.stdout.split("Ask more questions of the same recording, for example:\n")[1]
    commands = [line.strip() for line in ending.splitlines() if line.startswith("  ")]
    assert len(commands) == 3 and all(c.startswith(started_by + " ") for c in commands)
    at = re.search(r"--at (\d\d:\d\d:\d\d)$", commands[1])
    assert at, commands[1]
    outputs = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    assert "ledger" in outputs[0]  # the messages the ledger received
    assert re.search(r"^orders\s+4$", outputs[1], re.M), outputs[1]  # every change by then
    assert "pricer-1" in outputs[2] or "dispatch orders" in outputs[2]
    hint = ending.splitlines()[-1]
    activate = re.search(r"'source (\S+)'", hint)
    assert activate, hint
    found = subprocess.run(
        ["bash", "-c", f"source {activate.group(1)} && command -v procscope"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert os.path.samefile(found.stdout.strip(), PROCSCOPE)
