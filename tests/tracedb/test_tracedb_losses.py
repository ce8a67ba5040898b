"""Nothing lost silently: spans a process gives up are counted in the DB's ``losses``
table, and every read command says the recording is incomplete, and by how much.

Real programs, real SQLite files: the test holds the DB's write lock (another
connection's ``BEGIN IMMEDIATE``) while the program ends its spans, so the exporter
cannot write and the batch queue (64 spans here) fills.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter, _schema

PROCSCOPE = os.path.join(os.path.dirname(sys.executable), "procscope")
SPANS = 2000

PROGRAM = textwrap.dedent(
    """
    import os, sys
    import procscope
    from opentelemetry import trace

    db, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    procscope.setup(db=db, level="off", exporter="tracedb")
    tracer = trace.get_tracer("losses-test")

    def work():
        for _ in range(count):
            with tracer.start_as_current_span("work"):
                pass

    print("ready", flush=True)
    sys.stdin.readline()  # the test holds the DB's write lock from here
    if mode == "fork":
        child = os.fork()
        if child == 0:
            work()
            print("made", os.getpid(), flush=True)
            trace.get_tracer_provider().force_flush()  # through the relay, to the owner
            os._exit(0)
        os.waitpid(child, 0)
    else:
        work()
        print("made", os.getpid(), flush=True)
    sys.stdin.readline()
    procscope.shutdown()
    """
)


def _environ(overflow: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("OTEL_", "PROCSCOPE_", "_PROCSCOPE_")) or k == "TRACEPARENT")
    }
    env.update(
        PROCSCOPE_RAISE_INTERNAL_ERRORS="1",
        PROCSCOPE_OVERFLOW=overflow,
        OTEL_BSP_MAX_QUEUE_SIZE="64",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16",
        OTEL_BSP_SCHEDULE_DELAY="10",
    )
    return env


def _new_db(path: str) -> None:
    """A procscope DB that exists before the program starts (so the test can lock it).
    Made with SQL: an exporter in this process would write the test process's own loss
    counts (other tests' failed exports) into it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        _schema.create_schema(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _run(
    tmp_path: Path, overflow: str, mode: str, hold_s: float | None, program_text: str = PROGRAM
) -> dict[str, Any]:
    """Run the program with the DB locked while it ends its spans. ``hold_s``: release
    the lock after that long (None: once every span is made). Returns what it printed."""
    db = str(tmp_path / "trace.db")
    if not os.path.exists(db):
        _new_db(db)
    script = tmp_path / "program.py"
    script.write_text(program_text)
    program = subprocess.Popen(
        [sys.executable, str(script), db, mode, str(SPANS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environ(overflow),
        cwd=tmp_path,
    )
    assert program.stdin is not None and program.stdout is not None
    try:
        assert program.stdout.readline().strip() == "ready"
        holder = sqlite3.connect(db, isolation_level=None, timeout=10)
        holder.execute("BEGIN IMMEDIATE")
        program.stdin.write("go\n")
        program.stdin.flush()
        if hold_s is not None:
            time.sleep(hold_s)  # back-pressure for a while; no time is asserted
            holder.execute("ROLLBACK")
        made = program.stdout.readline().split()
        if hold_s is None:
            holder.execute("ROLLBACK")
        holder.close()
        program.stdin.write("end\n")
        program.stdin.flush()
        _, err = program.communicate(timeout=120)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
    assert program.returncode == 0, err
    assert made[0] == "made", (made, err)
    return {"db": db, "pid": int(made[1]), "stderr": err}


def _stored(db: str, pid: int) -> int:
    with TraceDB(db) as reader:
        return len(reader.spans(name="work", pid=pid))


def _losses(db: str) -> list[Any]:
    with TraceDB(db) as reader:
        return reader.losses()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    return subprocess.run(
        [PROCSCOPE, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mode, p.stat().st_size) for p in sorted(folder.iterdir())}


def test_drop_counts_exactly_what_is_missing_in_the_db_and_the_cli(tmp_path: Path) -> None:
    """drop: spans made - spans stored = the count in the DB = the count the CLI's stderr
    line gives; `traces` says it in its output and --json; read commands create nothing
    beside the DB; the SDK's "Queue full" warning never appears."""
    run = _run(tmp_path, "drop", "parent", hold_s=None)
    db, pid = run["db"], run["pid"]
    missing = SPANS - _stored(db, pid)
    assert missing > 0
    rows = _losses(db)
    assert [(r.pid, r.reason, r.count) for r in rows] == [(pid, "queue_full", missing)]
    assert "Queue full" not in run["stderr"]

    before = _listing(tmp_path)
    line = (
        f"procscope: recording incomplete: {missing:,} records dropped "
        f"(queue_full in pid {pid}: {missing:,})"
    )
    traces = _cli("traces", "--db", db)
    assert traces.returncode == 0 and traces.stderr.splitlines() == [line]
    assert line.removeprefix("procscope: ") in traces.stdout.splitlines()
    as_json = _cli("traces", "--db", db, "--json")
    recording = json.loads(as_json.stdout)["recording"]
    assert recording["complete"] is False and recording["lost"] == missing
    assert [(r["pid"], r["reason"], r["count"]) for r in recording["losses"]] == [
        (pid, "queue_full", missing)
    ]
    for command in (["processes"], ["messages"], ["state", "nothing"], ["show", "0" * 32]):
        done = _cli(*command, "--db", db)
        assert done.stderr.splitlines()[-1] == line, (command, done.stderr)
    assert _listing(tmp_path) == before


def test_wait_loses_nothing_and_the_cli_says_nothing(tmp_path: Path) -> None:
    """wait: the program's threads wait while the DB is locked; every span is stored,
    no loss is recorded, and the read commands print nothing on stderr."""
    run = _run(tmp_path, "wait", "parent", hold_s=0.5)
    db, pid = run["db"], run["pid"]
    assert _stored(db, pid) == SPANS
    assert _losses(db) == []
    traces = _cli("traces", "--db", db)
    assert traces.returncode == 0 and traces.stderr == ""
    assert "incomplete" not in traces.stdout
    assert json.loads(_cli("traces", "--db", db, "--json").stdout)["recording"] == {
        "complete": True,
        "lost": 0,
        "losses": [],
    }
    assert "Queue full" not in run["stderr"]


def test_a_fork_childs_losses_reach_the_db_through_the_relay(tmp_path: Path) -> None:
    """A fork child (drop) sends its batches to the DB owner's relay; its loss total goes
    with them and is stored under the child's pid: made - stored = counted."""
    run = _run(tmp_path, "drop", "fork", hold_s=None)
    db, child = run["db"], run["pid"]
    missing = SPANS - _stored(db, child)
    assert missing > 0
    assert [(r.pid, r.reason, r.count) for r in _losses(db)] == [(child, "queue_full", missing)]
    done = _cli("processes", "--db", db)
    assert f"queue_full in pid {child}: {missing:,}" in done.stderr


def test_a_version_1_db_is_read_and_migrated(tmp_path: Path, make_traces: Any) -> None:
    """A DB of schema version 1 (no losses table) is read as complete, and the first
    writer migrates it to the current version, keeping its spans."""
    db = str(tmp_path / "old.db")
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in (*_schema.TABLES, *_schema.INDEXES):
        if "CREATE TABLE losses" not in statement:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {_schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with TraceDB(db) as reader:
        assert reader.losses() == [] and reader.span_count() == 0
    exporter = TraceDBSpanExporter(db)
    exporter.export(make_traces(2))
    exporter.shutdown()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _schema.SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM losses").fetchone() is not None
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 8
    finally:
        conn.close()


@pytest.mark.parametrize("counts", [(5, 3), (3, 5)])
def test_loss_counts_only_grow(tmp_path: Path, counts: tuple[int, int]) -> None:
    """The same process's totals arriving in any order: the row keeps the larger."""
    db = str(tmp_path / "trace.db")
    _new_db(db)
    conn = sqlite3.connect(db, isolation_level=None)
    for count in counts:
        conn.execute(_schema.LOSS_UPSERT, (42, 1, "queue_full", count, count, "p"))
    conn.close()
    assert [(r.pid, r.count) for r in _losses(db)] == [(42, 5)]


EXIT_PROGRAM = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys
    import procscope
    from opentelemetry import trace

    def child(count):
        tracer = trace.get_tracer("losses-test")
        for _ in range(count):
            with tracer.start_as_current_span("work"):
                pass

    if __name__ == "__main__":
        procscope.setup(db=sys.argv[1], level="minimal", exporter="tracedb")
        print("ready", flush=True)
        sys.stdin.readline()  # the test holds the DB's write lock from here
        process = mp.get_context("fork").Process(target=child, args=(int(sys.argv[3]),))
        process.start()
        process.join()
        print("made", process.pid, flush=True)
        sys.stdin.readline()
        procscope.shutdown()
    """
)


def test_a_childs_exit_flush_out_of_budget_hands_the_rest_to_the_owner(tmp_path: Path) -> None:
    """A fork child ends while the DB is locked: its exit flush runs out of its budget,
    and what it could not store is handed to the DB owner (the hand-off spool,
    docs/lifecycle.md), which stores it at its own shutdown. Nothing vanishes: what the
    child made is stored or counted (queue_full under drop, exit_flush for what could be
    neither stored nor handed off), and the CLI names every count."""
    run = _run(tmp_path, "drop", "exit", hold_s=None, program_text=EXIT_PROGRAM)
    db, child = run["db"], run["pid"]
    by_reason = {r.reason: r.count for r in _losses(db) if r.pid == child}
    with TraceDB(db) as reader:
        stored = len(reader.spans(pid=child))
    # Made by the child: its spans and its own process span; each is stored or counted.
    # The batch it was sending when its flush gave up (at most 64 here) may be counted and
    # still reach the owner: counted once too many, never missing.
    counted = sum(by_reason.values())
    assert SPANS + 1 <= stored + counted <= SPANS + 1 + 64, (by_reason, run["stderr"])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".handoff") and
                [f for f in os.listdir(tmp_path / n) if not f.startswith(".")]]
    done = _cli("traces", "--db", db)
    for reason, count in by_reason.items():
        assert f"{reason} in pid {child}: {count:,}" in done.stderr


LOCKED_END = textwrap.dedent(
    """
    import multiprocessing, sqlite3, sys

    import procscope


    def work(done):
        done.put("sent")  # (a message: a span of the child's own)


    if __name__ == "__main__":
        db = sys.argv[1]
        procscope.setup(db=db)
        holder = sqlite3.connect(db, isolation_level=None, timeout=10)
        ctx = multiprocessing.get_context("fork")
        done = ctx.Queue()
        holder.execute("BEGIN IMMEDIATE")  # (the DB locked while the child ends)
        child = ctx.Process(target=work, args=(done,))
        child.start()
        done.get()
        child.join()
        holder.execute("ROLLBACK")
        holder.close()
        print(child.pid, child.exitcode)
        procscope.shutdown()
    """
)


def test_a_child_whose_own_writes_fail_leaves_its_losses_for_the_top_process(
    tmp_path: Path,
) -> None:
    """A fork child writing for itself (no relay) ends while the DB is locked past its
    every retry: its spans are lost, and so was their count (no later batch of its own to
    carry it: the DB said nothing). It leaves the count in the spool; the top process
    stores it at its end, in the child's run: the CLI names it and the run is not
    complete."""
    script = tmp_path / "locked_end.py"
    script.write_text(LOCKED_END)
    db = str(tmp_path / "trace.db")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    environ.update(PROCSCOPE_DB_RELAY="0", PROCSCOPE_DB_TIMEOUT="0.2")
    done = subprocess.run([sys.executable, str(script), db], capture_output=True, text=True,
                          env=environ, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    child, exitcode = (int(word) for word in done.stdout.split())
    assert exitcode == 0
    lost = {(r.pid, r.reason): r.count for r in _losses(db)}
    assert lost.get((child, "export_failed"), 0) >= 1, (lost, done.stderr)
    traces = _cli("traces", "--db", db)
    assert f"export_failed in pid {child}" in traces.stderr, traces.stderr
    runs = json.loads(_cli("runs", "--db", db, "--json").stdout)["runs"]
    assert (runs[-1]["complete"], runs[-1]["lost"]) == (False, lost[(child, "export_failed")])
    # (the spool directory is removed at the end once nothing is left in it)
    assert not os.path.exists(db + ".handoff"), os.listdir(db + ".handoff")
