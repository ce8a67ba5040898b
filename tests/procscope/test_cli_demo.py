"""``procscope demo``: the bundled example runs under procscope and its recording is shown."""

from __future__ import annotations

import json
import os
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
    assert "$ procscope processes" in out and "$ procscope show" in out
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
        "program", root_pid, 0, False
    )
    traces = json.loads(_procscope("traces", "--db", str(db), "--json", env=env).stdout)["traces"]
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
