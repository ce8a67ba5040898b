"""Run ids in real programs: every process of a run carries the run's id (fork, spawn,
forkserver, Python subprocesses), each ``procscope run`` starts a new run, and the read
commands show the latest run unless given ``--run``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procscope.exporters.tracedb import TraceDB

from .conftest import BIN, clean_environ

_FAMILY = """
import multiprocessing as mp
import os
import subprocess
import sys

from opentelemetry import trace

import procscope

SPAN = "from opentelemetry import trace; trace.get_tracer('t').start_span('child {}').end()"


def work(method):
    trace.get_tracer("t").start_span(f"child {method}").end()


if __name__ == "__main__":
    procscope.setup(db=sys.argv[1], exporter="tracedb")
    for method in ("fork", "spawn", "forkserver"):
        child = mp.get_context(method).Process(target=work, args=(method,))
        child.start()
        child.join()
    subprocess.run([sys.executable, "-c", SPAN.format("subprocess")], check=True)
    # The program's own env=, without procscope's variables: the run id comes along
    # with the settings.
    own = {k: v for k, v in os.environ.items() if not k.startswith("PROCSCOPE_")}
    subprocess.run([sys.executable, "-c", SPAN.format("subprocess-env")], env=own, check=True)
    trace.get_tracer("t").start_span("parent").end()
    procscope.shutdown()
"""


def test_every_process_of_a_run_carries_its_id(run_app: Callable[..., Any], tmp_path: Path) -> None:
    """A program that calls setup() starts a run; its fork, spawn and forkserver children
    and its Python subprocesses (with the program's environment or an env= of its own)
    record the same run id, and the run lists all six processes and its command."""
    db_path = tmp_path / "family.db"
    done = run_app(_FAMILY.replace("sys.argv[1]", repr(str(db_path))))
    assert done.returncode == 0, done.stderr
    with TraceDB(db_path) as db:
        (run,) = db.runs()
        names = {"parent"} | {
            f"child {m}" for m in ("fork", "spawn", "forkserver", "subprocess", "subprocess-env")
        }
        spans = [s for s in db.spans(run=run.run_id) if s.name in names]
        assert {s.name for s in spans} == names
        for span in spans:
            assert db.resource(span.resource_id)["procscope.run.id"] == run.run_id, span.name
        assert len({s.pid for s in spans}) == 6
        assert run.processes >= 6
        assert run.command is not None and run.command.endswith("app.py")


_APP = """
import sys
from opentelemetry import trace
trace.get_tracer("t").start_span("job " + sys.argv[1]).end()
"""


def _procscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "procscope"), *args],
        env=env or clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_each_procscope_run_is_a_run_and_read_commands_show_the_latest(tmp_path: Path) -> None:
    """Two `procscope run`s into one DB (the second started with a run id in its
    environment, as from inside a recorded program) are two runs; `procscope runs` lists
    both; `traces` shows the latest unless given --run (a unique start of an id, or all);
    an unknown run is exit status 2 with one line."""
    app, db = tmp_path / "app.py", str(tmp_path / "runs.db")
    app.write_text(_APP)
    first = _procscope("run", "--db", db, "--", "python", str(app), "first")
    assert first.returncode == 0, first.stderr
    with TraceDB(db) as reader:
        first_id = reader.latest_run_id()
    assert first_id is not None
    second = _procscope(
        "run",
        "--db",
        db,
        "--",
        "python",
        str(app),
        "second",
        env=clean_environ(PROCSCOPE_RUN_ID=first_id),
    )
    assert second.returncode == 0, second.stderr

    runs = json.loads(_procscope("runs", "--db", db, "--json").stdout)["runs"]
    assert [r["run_id"] == first_id for r in runs] == [True, False]
    assert [r["latest"] for r in runs] == [False, True]
    assert runs[1]["command"].endswith("app.py second")
    assert all(r["span_count"] >= 1 and r["complete"] for r in runs)

    def roots(*extra: str) -> set[str]:
        done = _procscope("traces", "--db", db, "--json", "--all", *extra)
        assert done.returncode == 0, done.stderr
        return {t["root_name"] for t in json.loads(done.stdout)["traces"]} & {
            "job first",
            "job second",
        }

    assert roots() == {"job second"}
    assert roots("--run", "all") == {"job first", "job second"}
    # The shortest start of the first id that the second does not share.
    second_id = runs[1]["run_id"]
    prefix = next(first_id[:n] for n in range(1, 17) if not second_id.startswith(first_id[:n]))
    assert roots("--run", prefix) == {"job first"}
    text = _procscope("runs", "--db", db).stdout
    assert first_id in text and f"{second_id} *" in text

    unknown = _procscope("processes", "--db", db, "--run", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "no run 'nope'" in unknown.stderr


def test_a_shell_running_two_programs_under_procscope_run_is_one_run(tmp_path: Path) -> None:
    """`procscope run -- sh -c "python app.py a; python app.py b"`: both programs are one
    run, whose command is the one given to procscope run (each used to start its own)."""
    app, db = tmp_path / "app.py", str(tmp_path / "shell.db")
    app.write_text(_APP)
    script = f"{sys.executable} {app} a; {sys.executable} {app} b"
    done = _procscope("run", "--db", db, "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr

    runs = json.loads(_procscope("runs", "--db", db, "--json").stdout)["runs"]
    assert len(runs) == 1
    assert runs[0]["command"] == f"sh -c '{script}'"
    traces = json.loads(_procscope("traces", "--db", db, "--json", "--all").stdout)["traces"]
    assert {t["root_name"] for t in traces} >= {"job a", "job b"}
