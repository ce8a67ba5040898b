"""The big-DB generator (benchmarks/tracedb/big_db.py) makes what the tests that use the
``big_db`` fixture rely on, read back through the trace DB's own queries."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from procscope.exporters.tracedb import TraceDB

_SOURCE = Path(__file__).parents[2] / "benchmarks" / "tracedb" / "big_db.py"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("procscope_bench_big_db", _SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_small_big_db_has_runs_processes_crashes_messages_and_state(tmp_path: Path) -> None:
    """30,000 spans: three runs of 40 processes each, the crashed and killed workers end
    as the info says, every message sent to a live worker is received, and a traced
    object's state is rebuilt from its snapshot and changes."""
    path = str(tmp_path / "big.db")
    info = _generator().build_big_db(path, spans=30_000)
    assert info == json.loads(Path(path + ".json").read_text())
    assert 29_000 <= info["spans"] <= 31_000
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == info["spans"]
        run_ids = {
            json.loads(attrs).get("procscope.run.id")
            for (attrs,) in conn.execute("SELECT attributes FROM resources")
        }
    conn.close()
    assert run_ids == {run["run_id"] for run in info["runs"]}
    assert len(info["runs"]) == 3
    with TraceDB(path) as db:
        run = info["runs"][-1]
        pids = {p.pid: p for p in db.processes() if p.start_ns and p.start_ns >= run["start_ns"]}
        assert len(pids) == 40
        for crashed in run["crashed"]:
            assert pids[crashed["pid"]].exit_code == 1 and pids[crashed["pid"]].error
        assert pids[run["killed"]["pid"]].exit_signal == 9
        sent = db.messages(queue="work-*", start_ns=run["start_ns"])
        unreceived = {m.message_id for m in sent if m.receiver is None}
        assert unreceived and unreceived <= set(run["unreceived_message_ids"])
        history = db.state_history("account-7")
        assert {r.kind for r in history} >= {"snapshot", "change"}
        last_change = [r for r in history if r.kind == "change"][-1]
        state = db.state_at("account-7", last_change.time_ns)
        assert state is not None
        assert dict(state.to_dict()["fields"])["balance"] == last_change.values[0]
    assert os.path.getsize(path) > 0


def test_parallel_workers_share_one_cached_build(tmp_path: Path) -> None:
    """Three processes asking for the cached DB at once (as xdist workers do) get the
    same file, built once: each sees the same inode, and nothing else is left behind."""
    code = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('g', {str(_SOURCE)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"p = m.cached_big_db(3000, folder={str(tmp_path)!r})\n"
        "print(p, os.stat(p).st_ino)\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    answers = {worker.communicate(timeout=120)[0].strip() for worker in workers}
    assert all(worker.returncode == 0 for worker in workers)
    assert len(answers) == 1
    path = answers.pop().split()[0]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([Path(path).name, Path(path).name + ".json", "procscope-big-db-lock"])
