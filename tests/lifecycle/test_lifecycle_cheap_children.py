"""Cheap children (issue 12, item 5): a Python subprocess that records nothing but its own
run sets no pipeline up; its run is stored as the full path would have stored it.

Each test runs a real program under ``procscope.setup()`` whose children are real Python
subprocesses, and reads the trace DB as a user would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

# A child that says what it imported: OpenTelemetry, and procscope's pipeline.
REPORT = (
    "import json, sys; print(json.dumps({'otel': sorted(m for m in sys.modules "
    "if m.startswith('opentelemetry')), 'pipeline': 'procscope._scope' in sys.modules}))"
)

SPAWN = """
import subprocess
def child(code, **kwargs):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          **kwargs)
    emit(child=done.returncode, out=done.stdout.strip(), err=done.stderr[-400:])
    return done
"""


def _runs(db_path: Path) -> dict[int, dict[str, Any]]:
    """The ``process`` spans of subprocess children, by pid: attributes, status, resource."""
    with closing(sqlite3.connect(db_path)) as db:
        rows = db.execute(
            "SELECT s.pid, s.process_name, s.attributes, s.status_code, s.status_description,"
            " s.start_ns, s.end_ns, r.attributes, s.span_id, s.parent_span_id, s.trace_id"
            " FROM spans s JOIN resources r ON r.resource_id = s.resource_id"
            " WHERE s.name LIKE 'process %'"
        ).fetchall()
    return {
        row[0]: {
            "process_name": row[1], "attributes": json.loads(row[2]), "status": row[3],
            "description": row[4], "start_ns": row[5], "end_ns": row[6],
            "resource": json.loads(row[7]), "span_id": row[8], "parent": row[9],
            "trace_id": row[10],
        }
        for row in rows
    }


def _spans_named(db_path: Path, name: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as db:
        return db.execute(
            "SELECT pid, span_id, parent_span_id, attributes, start_ns FROM spans WHERE name = ?",
            (name,),
        ).fetchall()


def _run_script(cwd: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``program`` run as a script that sets procscope up itself, in an environment
    without procscope's or OpenTelemetry's variables (stdin a pipe of its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    return subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, env=env,
        cwd=cwd, timeout=120, check=False, stdin=subprocess.PIPE,
    )


def _pid_of(run: Any, index: int) -> int:
    return int(json.loads(run.lines[index]["out"].splitlines()[-1])["pid"])


def test_a_child_that_records_nothing_else_imports_no_opentelemetry(run_program: Any) -> None:
    """A plain Python child imports neither OpenTelemetry nor procscope's pipeline, and its
    run is in the DB: under its own pid, parented to the spawn, with its own resource."""
    run = run_program(
        f"child({REPORT!r})\nchild('import os, json; print(json.dumps({{\"pid\": os.getpid()}}))')",
        helpers=SPAWN,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.lines[0]["out"])
    assert report == {"otel": [], "pipeline": False}
    pid = _pid_of(run, 1)
    runs = _runs(run.db_path)
    assert pid in runs, runs
    child = runs[pid]
    parent_pid = child["attributes"]["process.parent_pid"]
    assert child["attributes"] == {
        "thread.id": pid, "thread.name": "MainThread",
        "procscope.lifecycle.kind": "subprocess", "procscope.lifecycle.role": "run",
        "process.pid": pid, "process.parent_pid": parent_pid,
        "procscope.process.name": "python", "procscope.process.start_method": "subprocess",
    }
    assert child["process_name"] == "MainProcess"
    assert child["status"] == 0 and child["start_ns"] < child["end_ns"]
    resource = child["resource"]
    assert resource["process.pid"] == pid and resource["process.parent_pid"] == parent_pid
    assert "procscope.run.command" not in resource
    # The parent's spawn span is the run's parent, in the same trace.
    spawns = _spans_named(run.db_path, "spawn python")
    assert child["parent"] in {row[1] for row in spawns}
    # The records were taken: nothing left in the spool directory.
    spool = Path(str(run.db_path) + ".handoff")
    assert not spool.exists() or not [p for p in spool.iterdir() if "cheap-" in p.name]


def test_a_cheap_childs_run_is_stored_as_a_set_up_childs_is(run_program: Any) -> None:
    """The same run, once cheap and once fully set up (forced by a variable of its own):
    the same attributes and resource but for what differs by process."""
    code = "import os, json; print(json.dumps({'pid': os.getpid()}))"
    run = run_program(
        f"child({code!r})\n"
        f"child({code!r}, env={{**os.environ, 'OTEL_FORCES_A_FULL_CHILD': '1'}})",
        helpers=SPAWN,
    )
    assert run.returncode == 0, run.stderr
    cheap_pid, full_pid = _pid_of(run, 0), _pid_of(run, 1)
    runs = _runs(run.db_path)
    cheap, full = runs[cheap_pid], runs[full_pid]
    varying = {"process.pid", "thread.id", "service.instance.id"}

    def same_shape(values: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(k, None if k in varying else v) for k, v in values.items()]

    assert same_shape(cheap["attributes"]) == same_shape(full["attributes"])
    assert same_shape(cheap["resource"]) == same_shape(full["resource"])
    assert cheap["resource"]["service.instance.id"] != full["resource"]["service.instance.id"]


def test_a_child_that_starts_a_thread_sets_up_and_records_it(run_program: Any) -> None:
    """Importing threading sets the child up; its thread's span is under a run that began
    at the child's start, before the import."""
    code = (
        "import os, json, time; began = time.time_ns()\n"
        "import threading\n"
        "t = threading.Thread(target=lambda: None, name='worker'); t.start(); t.join()\n"
        "print(json.dumps({'pid': os.getpid(), 'began': began}))"
    )
    run = run_program(f"child({code!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.lines[0]["out"])
    child = _runs(run.db_path)[out["pid"]]
    assert child["start_ns"] <= out["began"]
    threads = [row for row in _spans_named(run.db_path, "thread worker") if row[0] == out["pid"]]
    assert len(threads) == 1
    assert threads[0][2] == child["span_id"]


def test_a_trigger_imported_by_another_module_waits_for_it(run_program: Any) -> None:
    """logging imports threading at its top: the child is set up once logging is whole,
    and logging, queue and concurrent.futures work as plainly."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s')\n"
        "logging.warning('still logging')\n"
        "from queue import Queue\n"
        "import concurrent.futures as cf\n"
        "q = Queue(); q.put(2)\n"
        "with cf.ThreadPoolExecutor(1) as pool: print(pool.submit(q.get).result() * 21)\n"
        "print('pipeline', 'procscope._scope' in sys.modules)"
    )
    run = run_program(f"child({code!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    line = run.lines[0]
    assert line["child"] == 0, line["err"]
    assert line["out"].splitlines() == ["WARNING still logging", "42", "pipeline True"]


def test_a_cheap_child_that_fails_is_recorded_as_failing(run_program: Any) -> None:
    """An unhandled exception, os._exit with a code, and SIGTERM end a cheap child's run
    with what the full path records: the error, the code, the signal."""
    raises = "import os, json; print(json.dumps({'pid': os.getpid()}), flush=True); 1/0"
    exits = "import os, json; print(json.dumps({'pid': os.getpid()}), flush=True); os._exit(3)"
    killed = (
        "import os, json, signal; print(json.dumps({'pid': os.getpid()}), flush=True); "
        "os.kill(os.getpid(), signal.SIGTERM); import time; time.sleep(5)"
    )
    run = run_program(f"child({raises!r})\nchild({exits!r})\nchild({killed!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    assert [line["child"] for line in run.lines] == [1, 3, -15]
    runs = _runs(run.db_path)
    failed, exited, terminated = (runs[_pid_of(run, i)] for i in range(3))
    assert failed["status"] == 2 and failed["description"].startswith("ZeroDivisionError")
    assert exited["status"] == 2 and exited["attributes"]["process.exit.code"] == 3
    assert terminated["status"] == 2
    assert terminated["attributes"]["procscope.process.exit.signal"] == 15
    with closing(sqlite3.connect(run.db_path)) as db:
        events = db.execute(
            "SELECT e.name FROM events e JOIN spans s ON s.span_pk = e.span_pk WHERE s.pid = ?",
            (_pid_of(run, 0),),
        ).fetchall()
    assert ("exception",) in events


def test_a_child_never_waited_for_is_stored_at_the_programs_end(run_program: Any) -> None:
    """Its parent never reaps it: the program's end makes its run's span."""
    code = "import os, json; print(json.dumps({'pid': os.getpid()}), flush=True)"
    body = (
        "import subprocess\n"
        f"p = subprocess.Popen([sys.executable, '-c', {code!r}], stdout=subprocess.PIPE)\n"
        "out = p.stdout.read(); time.sleep(0.3)\n"
        "emit(out=out.decode())\n"
    )
    run = run_program(body)
    assert run.returncode == 0, run.stderr
    pid = json.loads(run.lines[0]["out"])["pid"]
    assert pid in _runs(run.db_path)


def test_a_grandchild_of_a_set_up_child_is_cheap_too(run_program: Any) -> None:
    """A child that starts a subprocess is set up (it imports subprocess); its own Python
    child is cheap, and stored under its own pid with the middle one as parent."""
    inner = "import os, json; print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid()}))"
    middle = (
        "import subprocess, sys\n"
        f"done = subprocess.run([sys.executable, '-c', {inner!r}], capture_output=True, "
        "text=True)\n"
        "print(done.stdout.strip())\n"
    )
    run = run_program(f"child({middle!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.lines[0]["out"])
    runs = _runs(run.db_path)
    assert out["pid"] in runs and out["ppid"] in runs
    assert runs[out["pid"]]["attributes"]["process.parent_pid"] == out["ppid"]
    assert runs[out["pid"]]["trace_id"] == runs[out["ppid"]]["trace_id"]


def test_an_unsampled_cheap_child_leaves_nothing(run_program: Any) -> None:
    """At rate 0 a child's run is not recorded, cheap or not, and leaves no record."""
    run = run_program(
        f"child({REPORT!r})",
        helpers=SPAWN,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", sample_rate=0.0)',
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.lines[0]["out"]) == {"otel": [], "pipeline": False}
    assert _runs(run.db_path) == {}
    spool = Path(str(run.db_path) + ".handoff")
    assert not spool.exists() or not [p for p in spool.iterdir() if "cheap-" in p.name]


def test_tail_sampling_keeps_children_set_up(run_program: Any) -> None:
    """Under tail sampling a child's span must pass the tail sampler: no cheap children."""
    run = run_program(
        f"child({REPORT!r})",
        helpers=SPAWN,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", sampling="tail")',
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.lines[0]["out"])["pipeline"] is True


CONSOLE_PROGRAM = """
import os, subprocess, sys
import procscope
procscope.setup(exporter="console")
done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                      capture_output=True, text=True)
# (on stderr: the console exporter writes spans to stdout from a helper thread)
print("CHILD", done.stdout.strip(), file=sys.stderr, flush=True)
procscope.shutdown()
"""


def _json_objects(text: str) -> list[Any]:
    decoder, found, index = json.JSONDecoder(), [], 0
    while (start := text.find("{", index)) >= 0:
        try:
            value, index = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        found.append(value)
    return found


def test_a_cheap_childs_run_reaches_an_exporter_other_than_the_trace_db(
    tmp_path: Path,
) -> None:
    """Without the trace DB (the console exporter here, OTLP alike) the child's span is
    exported by the top process with the child's resource, which says whose it is."""
    done = _run_script(tmp_path, CONSOLE_PROGRAM)
    assert done.returncode == 0, done.stderr
    child_pid = int(done.stderr.split("CHILD", 1)[1].split()[0])
    runs = [
        span for span in _json_objects(done.stdout)
        if span.get("name") == "process python"
    ]
    assert len(runs) == 1, done.stdout[-2000:]
    assert runs[0]["resource"]["attributes"]["process.pid"] == child_pid
    assert runs[0]["attributes"]["process.pid"] == child_pid
    assert runs[0]["parent_id"] is not None
    left = [p for p in Path(tempfile.gettempdir()).glob(f"procscope-handoff-*/cheap-{child_pid}-*")]
    assert left == []


def test_an_unhandled_keyboard_interrupt_still_ends_the_child_by_sigint(
    run_program: Any,
) -> None:
    """The interpreter ends a child stopped by Ctrl-C with SIGINT (exit status -2), after
    atexit: still so when the child's run is ended there, and the run records it."""
    code = (
        "import os, json, signal; print(json.dumps({'pid': os.getpid()}), flush=True); "
        "os.kill(os.getpid(), signal.SIGINT); import time; time.sleep(5)"
    )
    run = run_program(f"child({code!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    assert run.lines[0]["child"] == -2
    assert "KeyboardInterrupt" in run.lines[0]["err"]
    interrupted = _runs(run.db_path)[_pid_of(run, 0)]
    assert interrupted["status"] == 2
    assert interrupted["description"].startswith("KeyboardInterrupt")


FD_PROGRAM = """
import os, subprocess, sys, time
import procscope
procscope.setup(db=sys.argv[1], exporter="tracedb")
lost = 0
for _ in range(12):
    # As CPython's test_subprocess does: a standard stream closed while a child runs,
    # then given back. Nothing of procscope's may take its number meanwhile.
    saved = os.dup(0)
    os.close(0)
    subprocess.run([sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL)
    os.dup2(saved, 0)
    os.close(saved)
    time.sleep(0.05)
    try:
        os.fstat(0)
    except OSError:
        lost += 1
print("LOST", lost)
procscope.shutdown()
"""


def test_reading_a_childs_record_never_takes_a_number_the_program_gives_back(
    tmp_path: Path,
) -> None:
    """The record is read on the program's own thread: a helper thread that opened it
    while the program had fd 0 closed would close the program's stdin afterwards."""
    done = _run_script(tmp_path, FD_PROGRAM, str(tmp_path / "t.db"))
    assert done.returncode == 0, done.stderr
    assert "LOST 0" in done.stdout
    with closing(sqlite3.connect(tmp_path / "t.db")) as db:
        (runs,) = db.execute("SELECT count(*) FROM spans WHERE name = 'process python'").fetchone()
    assert runs == 12


def test_a_child_that_only_logs_stays_cheap(run_program: Any) -> None:
    """logging imports threading but starts no thread: the child stays cheap, and
    ``Thread.start`` looks as it does plainly while it is watched."""
    code = (
        "import logging, sys, inspect, threading\n"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s')\n"
        "logging.warning('logged')\n"
        "print(threading.Thread.start.__name__, inspect.signature(threading.Thread.start))\n"
        "print('pipeline', 'procscope._scope' in sys.modules)"
    )
    run = run_program(f"child({code!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    assert run.lines[0]["out"].splitlines() == ["logged", "start (self)", "pipeline False"]


def test_the_first_thread_started_sets_the_child_up(run_program: Any) -> None:
    """A Timer (a Thread subclass) and a subclass whose start calls Thread.start: the
    first start sets the child up, both threads are recorded, and Thread.start is
    threading's own again (wrapped by the instrumentation as in any set-up process)."""
    code = (
        "import os, json, sys, threading\n"
        "class Mine(threading.Thread):\n"
        "    def start(self):\n"
        "        super().start()\n"
        "t = threading.Timer(0.01, int); t.name = 'timer'; t.start(); t.join()\n"
        "m = Mine(target=int, name='mine'); m.start(); m.join()\n"
        "print(json.dumps({'pid': os.getpid(), 'pipeline': 'procscope._scope' in sys.modules,"
        " 'watcher': threading.Thread.start.__code__.co_name}))"
    )
    run = run_program(f"child({code!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.lines[0]["out"])
    assert out["pipeline"] is True
    assert out["watcher"] != "_start_thread"
    child = _runs(run.db_path)[out["pid"]]
    for name in ("thread timer", "thread mine"):
        spans = [row for row in _spans_named(run.db_path, name) if row[0] == out["pid"]]
        assert len(spans) == 1, name
        assert spans[0][2] == child["span_id"]


def test_a_cheap_child_that_imported_threading_fails_quietly_and_recorded(
    run_program: Any,
) -> None:
    """Its end records the exception (event with the stack, error status) and says
    nothing on stderr besides Python's own traceback: nothing is set up at its exit,
    after threading has shut down."""
    code = (
        "import os, json, logging, threading; "
        "print(json.dumps({'pid': os.getpid()}), flush=True); 1/0"
    )
    run = run_program(f"child({code!r})", helpers=SPAWN)
    assert run.returncode == 0, run.stderr
    line = run.lines[0]
    assert line["child"] == 1
    assert "procscope" not in line["err"] and "ZeroDivisionError" in line["err"]
    failed = _runs(run.db_path)[_pid_of(run, 0)]
    assert failed["status"] == 2
    assert failed["description"] == "ZeroDivisionError: division by zero"
    with closing(sqlite3.connect(run.db_path)) as db:
        rows = db.execute(
            "SELECT e.name, e.attributes FROM events e JOIN spans s ON s.span_pk = e.span_pk"
            " WHERE s.pid = ?", (_pid_of(run, 0),),
        ).fetchall()
    assert [name for name, _ in rows] == ["exception"]
    attributes = json.loads(rows[0][1])
    assert attributes["exception.type"] == "ZeroDivisionError"
    assert attributes["exception.stacktrace"].startswith("Traceback (most recent call last)")


LIVE_PROGRAM = """
import json, sqlite3, subprocess, sys, time
import procscope
procscope.setup(db=sys.argv[1], exporter="tracedb")
inner = "import os, json; print(json.dumps({'pid': os.getpid()}))"
middle = (
    "import subprocess, sys\\n"
    f"print(subprocess.run([sys.executable, '-c', {inner!r}], capture_output=True,"
    " text=True).stdout.strip())"
)
done = subprocess.run([sys.executable, "-c", middle], capture_output=True, text=True)
pid = json.loads(done.stdout)["pid"]
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    db = sqlite3.connect(sys.argv[1])
    try:
        found = db.execute("SELECT count(*) FROM spans WHERE name = 'process python'"
                           " AND pid = ?", (pid,)).fetchone()[0]
    finally:
        db.close()
    if found:
        break
    time.sleep(0.25)
print("STORED WHILE RUNNING", found, flush=True)
procscope.shutdown()
"""


def test_a_grandchilds_run_is_stored_while_the_program_runs(tmp_path: Path) -> None:
    """No process of the program reaps it where its span is made (the top process): the
    top process still stores it on its export schedule, not only at its end."""
    done = _run_script(tmp_path, LIVE_PROGRAM, str(tmp_path / "t.db"))
    assert done.returncode == 0, done.stderr
    assert "STORED WHILE RUNNING 1" in done.stdout, done.stdout + done.stderr
