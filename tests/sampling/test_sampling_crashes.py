"""Tail mode at 1% with real crashing child processes: every abnormal end is kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from procscope.exporters.tracedb import TraceDB

PROGRAM = """
import multiprocessing as mp
import os
import signal
import time

import procscope

procscope.setup(sample_rate=0.01, level="minimal", db={db!r})


def fine():
    pass


def fails():
    os._exit(3)


def hangs():
    time.sleep(60)


if __name__ == "__main__":
    ctx = mp.get_context({method!r})
    for _ in range(12):
        p = ctx.Process(target=fine)
        p.start()
        p.join()
    for _ in range(3):
        p = ctx.Process(target=fails)
        p.start()
        p.join()
    for _ in range(2):
        p = ctx.Process(target=hangs)
        p.start()
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    procscope.shutdown()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork and SIGKILL are POSIX")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_every_crash_and_kill_is_kept_at_one_percent(tmp_path: Path, method: str) -> None:
    """3 children exiting with code 3 and 2 killed by SIGKILL are all in the DB; few others."""
    db = tmp_path / "trace.db"
    (tmp_path / "app.py").write_text(textwrap.dedent(PROGRAM.format(db=str(db), method=method)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env.update(PROCSCOPE_SAMPLING="tail", PROCSCOPE_RAISE_INTERNAL_ERRORS="1")
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
    with TraceDB(db) as trace_db:
        spans = trace_db.spans()
    codes = [s.attributes.get("process.exit.code") for s in spans if s.name.startswith("exit")]
    signals = [
        s.attributes.get("procscope.process.exit.signal")
        for s in spans
        if s.name.startswith("exit")
    ]
    assert codes.count(3) == 3, [(s.name, s.attributes) for s in spans]
    assert signals.count(9) == 2
    abnormal = [
        s
        for s in spans
        if s.attributes.get("process.exit.code") not in (None, 0)
        or s.attributes.get("procscope.process.exit.signal") is not None
    ]
    assert {s.attributes["procscope.sampling.probability"] for s in abnormal} == {1.0}
    abnormal_traces = {s.trace_id for s in abnormal}
    other_traces = {s.trace_id for s in spans} - abnormal_traces
    assert len(other_traces) <= 3  # 12 clean children at 1%: almost always none
