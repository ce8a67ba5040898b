"""TraceDB.timeline with around or last reads only part of the actor's spans (fd0ea74):
it must give exactly the entries the whole timeline has there."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from procscope.exporters.tracedb import TraceDB

_SOURCE = Path(__file__).parents[2] / "benchmarks" / "tracedb" / "big_db.py"


def test_around_and_last_give_the_whole_timelines_entries(tmp_path: Path) -> None:
    """On a generated DB (threads, crashes, busy processes), for a process, a thread of
    it, a dispatcher and the main process: the last 1, 7 and 60 entries and the entries
    within 2 s of three instants are those of the whole timeline."""
    spec = importlib.util.spec_from_file_location("procscope_bench_big_db", _SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "db.db"
    info = module.build_big_db(path, spans=40_000)
    crashed = info["runs"][-1]["crashed"][0]["name"]
    with TraceDB(path) as db:
        run = db.latest_run_id()
        for who in (crashed, "worker-1-3/fetcher-1", "dispatcher-2", "orders-app"):
            whole = [e.to_dict() for e in db.timeline(who, run=run)]
            assert len(whole) > 20, who
            for n in (1, 7, 60):
                assert [e.to_dict() for e in db.timeline(who, run=run, last=n)] == whole[-n:]
            for at in (whole[0], whole[len(whole) // 2], whole[-1]):
                near = [e for e in whole if abs(e["time_ns"] - at["time_ns"]) <= 2_000_000_000]
                got = [e.to_dict() for e in db.timeline(who, run=run, around=at["time_ns"])]
                assert got == near, who
