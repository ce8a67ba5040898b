"""A large recording is stored at once as one staged row, then made into spans: a process
that dies in between leaves the row, and its parent (or the top process at its end)
stores the spans it had not, none of them twice."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from procscope.exporters.tracedb import _schema

from .conftest import CLI, clean_environ, cli, run_program

# The worker makes MESSAGES put+get, dumps them (40,000 records: a staged dump), waits
# until the row is stored and its first spans too, and kills itself mid-way. (A worker
# whose own span is drawn sampled, one in 100, would make spans, not flight records: it
# ends at once with 0, and another is started.)
KILLED_MID_DUMP = """
import multiprocessing as mp
import os
import queue
import signal
import sqlite3
import sys
import time

import procscope
from opentelemetry import trace


def stored(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        staged = conn.execute(
            "SELECT count(*) FROM flight_staged WHERE pid = ?", (os.getpid(),)).fetchone()[0]
        spans = conn.execute(
            "SELECT count(*) FROM spans WHERE pid = ?", (os.getpid(),)).fetchone()[0]
        return staged, spans
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        conn.close()


def work(db, count, note):
    if trace.get_current_span().get_span_context().trace_flags.sampled:
        return  # (its records would not be flight records: see start)
    q = procscope.name(queue.Queue(), "inbox")
    for i in range(count):
        q.put(i)
        q.get()
    procscope.dump("checkpoint")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        staged, spans = stored(db)
        if staged and spans:
            break
        time.sleep(0.002)
    with open(note, "w") as out:
        out.write(f"{staged} {spans}")
    os.kill(os.getpid(), signal.SIGKILL)


def start(how, db, count, note):
    while True:  # (until a worker is unsampled: a sampled one returns at once, exit code 0)
        if how == "os.fork":
            pid = os.fork()
            if pid == 0:
                work(db, count, note)
                os._exit(0)
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        else:
            worker = mp.get_context(how).Process(target=work, args=(db, count, note),
                                                 name="worker")
            worker.start()
            worker.join()
            code = worker.exitcode
        if code != 0:
            return code


if __name__ == "__main__":
    db, how, count, note = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    procscope.setup(sample_rate=0.01, db=db)
    print(start(how, db, count, note))
    procscope.shutdown()
"""

MESSAGES = 20_000


@pytest.mark.parametrize("how", ["fork", "spawn", "os.fork"])
def test_a_worker_killed_while_its_recording_is_made_into_spans_loses_none_and_repeats_none(
    tmp_path: Path, how: str
) -> None:
    """Killed after its recording was staged and part of its spans stored: every message
    is in ``procscope messages`` exactly once, with both ends, and nothing is left
    staged (a multiprocessing child is finished by its parent when reaped, a bare
    ``os.fork`` child by the top process at its end)."""
    db, note = tmp_path / "flight.db", tmp_path / "killed-at"
    done = run_program(tmp_path, KILLED_MID_DUMP, str(db), how, str(MESSAGES), str(note),
                       timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "-9"
    staged, spans = map(int, note.read_text().split())
    # (killed with its row staged and part of its spans stored: the case under test)
    assert staged == 1 and 0 < spans < 2 * MESSAGES, (staged, spans)
    rows = cli("messages", "--db", str(db), "--queue", "inbox", "--limit", "1000000")
    gets = sorted(int(row["content"]) for row in rows if row["receiver"] is not None)
    assert gets == list(range(MESSAGES))
    # Each put and its get are one message, whichever process stored them.
    assert len(rows) == MESSAGES and all(row["sender"] for row in rows)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM flight_staged").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM spans WHERE name = 'get inbox'"
                            ).fetchone()[0] == MESSAGES
    reasons = [r["reason"] for r in cli("traces", "--db", str(db), "--recordings")["recordings"]]
    assert "checkpoint" in reasons


# The top process itself dumps and is killed before its spans are made: nobody finishes
# its row, and every read command says so.
TOP_KILLED = """
import os
import queue
import signal
import sqlite3
import sys
import threading
import time

import procscope
from opentelemetry import trace

procscope.setup(sample_rate=0.01, db=sys.argv[1])
q = procscope.name(queue.Queue(), "inbox")


def work():
    # (in a thread: its unsampled span is the messages' parent; on the main thread, with
    # no span, each put would draw, and a sampled one makes the later ones sampled too)
    global unsampled
    unsampled = not trace.get_current_span().get_span_context().trace_flags.sampled
    if not unsampled:
        return  # (one thread in 100 is drawn sampled: its records are not flight records)
    for i in range(20_000):
        q.put(i)
        q.get()


unsampled = False
while not unsampled:
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
procscope.dump("last words")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
    try:
        if conn.execute("SELECT count(*) FROM flight_staged").fetchone()[0]:
            break
    except sqlite3.OperationalError:
        pass
    finally:
        conn.close()
    time.sleep(0.002)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_recording_left_staged_is_reported_incomplete_until_the_next_program_ends(
    tmp_path: Path,
) -> None:
    """The records are in the DB but not yet spans: ``procscope traces`` says so in its
    output and its JSON, and other read commands in one stderr line; the next program
    that writes the DB makes the spans at its end."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, TOP_KILLED, str(db), timeout=120)
    assert done.returncode == -9, done.stderr
    summary = cli("traces", "--db", str(db), "--run", "all")["recording"]
    assert summary["complete"] is False
    (loss,) = summary["losses"]
    # (its 40,000 messages' records, and the thread's end: one more for each thread
    # started again after a sampled draw)
    assert loss["reason"] == "flight_staged" and 40_000 <= loss["count"] <= 40_010, loss
    shown = subprocess.run([CLI, "messages", "--db", str(db), "--run", "all"],
                           capture_output=True, text=True, timeout=60, env=clean_environ())
    assert shown.returncode == 0, shown.stderr
    line = f"{loss['count']:,} flight records not yet spans (pid {loss['pid']})"
    assert [text for text in shown.stderr.splitlines() if line in text], shown.stderr
    listed = cli("traces", "--db", str(db), "--run", "all", "--recordings")["recordings"]
    assert [(r["reason"], r["staged"]) for r in listed] == [("last words", True)]
    # The next program to use the DB finishes it, as its top process ends.
    later = "import procscope, sys; procscope.setup(db=sys.argv[1]); procscope.shutdown()"
    assert run_program(tmp_path, later, str(db)).returncode == 0
    assert cli("traces", "--db", str(db), "--run", "all")["recording"]["complete"] is True
    listed = cli("traces", "--db", str(db), "--run", "all", "--recordings")["recordings"]
    assert [(r["reason"], r["staged"]) for r in listed] == [("last words", False)]
    rows = cli("messages", "--db", str(db), "--run", "all", "--queue", "inbox",
               "--limit", "100000")
    assert sorted(int(row["content"]) for row in rows if row["sender"] and row["receiver"]
                  ) == list(range(20_000))


def test_a_version_3_db_gains_the_staging_table_when_written(tmp_path: Path) -> None:
    """A DB made before staging (schema version 3) is migrated by the next writer."""
    db = tmp_path / "old.db"
    program = "import procscope, sys; procscope.setup(db=sys.argv[1]); procscope.shutdown()"
    run_program(tmp_path, program, str(db))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TABLE flight_staged")
        conn.execute("DROP TABLE span_backlog")  # (version 5)
        conn.execute("PRAGMA user_version = 3")
        conn.commit()
    run_program(tmp_path, program, str(db))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _schema.SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM flight_staged").fetchone()[0] == 0
    assert os.path.exists(db)


def test_a_staged_record_span_id_is_the_same_in_every_python() -> None:
    """A row left by one procscope may be finished by a later one, on another Python: the
    ids its spans get must not change (else the spans stored before the death would be
    stored again), and differ for every record of a thread."""
    from procscope.core._flight_stage import span_id

    # (the value every version of the mix has given: computed on 3.11 and 3.13)
    assert span_id(0x1234_5678_9ABC_DEF, 1_796_443_743_850_786_177, 140_234_567_890) == (
        0xE2B06CBB55C0FA5E)
    ids = {span_id(7, 1_796_443_743_850_786_177 + step * 37, 140_234_567_890)
           for step in range(100_000)}
    assert len(ids) == 100_000 and 0 not in ids


def test_the_marker_stays_while_any_recording_of_the_process_is_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two recordings staged at once (triggers a second apart): the marker that tells a
    parent to finish them goes only with the spans of the last one."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from procscope.core import _flight_spans, _flight_stage, handoff
    from procscope.exporters.tracedb import TraceDBSpanExporter

    monkeypatch.setenv(handoff.ENV_DIR, str(tmp_path / "handoff"))
    exporter = TraceDBSpanExporter(tmp_path / "staged.db")
    origin = (Resource.create({}), InstrumentationScope("test"))
    try:
        keys = [_flight_stage.stage(
            _flight_spans.Dump(reason, *_flight_spans.new_ids(), None, [], 0, 0, 30.0),
            exporter, origin) for reason in ("first", "second")]
        assert None not in keys and _flight_stage.left_by(os.getpid())
        _flight_stage.unstaged(keys[0])
        assert _flight_stage.left_by(os.getpid())
        _flight_stage.unstaged(keys[1])
        assert not _flight_stage.left_by(os.getpid())
        assert len(exporter.staged_rows(os.getpid())) == 2
    finally:
        exporter.shutdown()
