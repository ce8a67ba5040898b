"""Processes in real programs writing a trace DB: every start method, crashes, nesting,
pools, os.fork, subprocesses; the tree that TraceDB.processes() rebuilds from them."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest

CHILD_HELPERS = """
import multiprocessing as mp, signal

def child_work(n):
    # 20 spans of the child's own: none may be lost when it exits.
    for i in range(n):
        with tracer.start_as_current_span(f"child-span-{i}"):
            pass
    emit(child=mp.current_process().name, pid=os.getpid(),
         level=__import__("procscope.core.shared_state", fromlist=["x"]).settings().level)

def crash():
    raise RuntimeError("child crashed")

def hard_exit():
    with tracer.start_as_current_span("before-os-exit"):
        pass
    os._exit(3)

def calls_sys_exit():
    sys.exit(4)

def sleep_long():
    with tracer.start_as_current_span("before-signal"):
        pass
    time.sleep(60)

def nested(method):
    p = mp.get_context(method).Process(target=child_work, args=(1,), name="grandchild")
    p.start(); p.join()
"""


def _spans_named(run: Any, pattern: str) -> list[Any]:
    return run.db.spans(name=pattern)  # type: ignore[no-any-return]


def test_every_start_method_is_recorded_under_its_parent_without_losing_spans(
    run_program: Any,
) -> None:
    """fork, spawn, forkserver: a row each under the program; all 20 child spans kept."""
    run = run_program(
        """
        with tracer.start_as_current_span("main-root") as root:
            emit(main_pid=os.getpid(), trace_id=format(root.get_span_context().trace_id, "032x"))
            for method in ("fork", "spawn", "forkserver"):
                p = mp.get_context(method).Process(target=child_work, args=(20,), name=method)
                p.start(); p.join()
                emit(started=method, pid=p.pid)
        """,
        helpers=CHILD_HELPERS,
    )
    assert run.returncode == 0, run.stderr[-800:]
    main_pid = run.line("main_pid")["main_pid"]
    trace_id = run.line("main_pid")["trace_id"]
    rows = run.by_name()
    assert rows["fork"].depth == 1
    for method in ("fork", "spawn", "forkserver"):
        row = rows[method]
        assert row.start_method == method
        assert row.pid == next(x["pid"] for x in run.lines if x.get("started") == method)
        assert row.parent_pid == main_pid
        assert (row.exit_code, row.exit_signal, row.error) == (0, None, False)
        # Context: the child's process span and its own spans are in the parent's trace.
        assert row.trace_id == trace_id
        child_spans = [s for s in run.db.spans(pid=row.pid) if s.name.startswith("child-span-")]
        assert len(child_spans) == 20, f"{method}: {len(child_spans)} of 20 spans"
        assert {s.parent_span_id for s in child_spans} == {row.run_span_id}
        assert {s.trace_id for s in child_spans} == {trace_id}
    # The program at the top of the tree, made from its own spans.
    top = run.db.processes()[0]
    assert (top.pid, top.kind, top.depth) == (main_pid, "program", 0)
    # Children run with the parent's settings (level full here, not a default of theirs).
    assert {x["level"] for x in run.lines if "child" in x} == {"full"}


def test_crashing_children_show_how_they_ended(run_program: Any) -> None:
    """Exception, os._exit(3), sys.exit(4), SIGKILL, SIGTERM: each end in the tree."""
    run = run_program(
        """
        ctx = mp.get_context("fork")
        for target in (crash, hard_exit, calls_sys_exit):
            p = ctx.Process(target=target, name=target.__name__); p.start(); p.join()
        for sig in (signal.SIGKILL, signal.SIGTERM):
            p = ctx.Process(target=sleep_long, name=sig.name); p.start()
            while not run_spans_of(p.pid):
                time.sleep(0.02)
            os.kill(p.pid, sig); p.join()
        p = mp.get_context("forkserver").Process(target=hard_exit, name="forkserver_exit")
        p.start(); p.join()
        """,
        helpers=CHILD_HELPERS
        + """
def run_spans_of(pid):
    # Wait until the child has flushed its first span: it is running its target.
    procscope._api.current_scope().force_flush()
    from procscope.exporters.tracedb import TraceDB
    with TraceDB(sys.argv[1]) as db:
        return db.spans(pid=pid, name="before-signal")
""",
        env={"OTEL_BSP_SCHEDULE_DELAY": "50"},
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert "cannot write spans" not in run.stderr, run.stderr[-800:]
    rows = run.by_name()
    crash = rows["crash"]
    assert (crash.exit_code, crash.error) == (1, True)
    assert crash.error_message == "RuntimeError: child crashed"
    assert (rows["hard_exit"].exit_code, rows["hard_exit"].error) == (3, True)
    assert rows["calls_sys_exit"].exit_code == 4
    # The child's own process span got out too, on each of these ends (flushed at exit).
    for name in ("crash", "hard_exit", "calls_sys_exit"):
        assert rows[name].run_span_id is not None, name
    killed = rows["SIGKILL"]
    assert (killed.exit_signal, killed.exit_code, killed.error) == (9, None, True)
    # It could not record its own span: the parent recorded it at the reap, under the id
    # the child gave it (what the child exported keeps its parent).
    assert killed.run_span_id is not None
    termed = rows["SIGTERM"]
    assert (termed.exit_signal, termed.error) == (15, True)
    # SIGTERM: the child ended its own process span and flushed before dying.
    (own,) = [s for s in run.db.spans(pid=termed.pid) if s.name == "process SIGTERM"]
    assert own.attributes["procscope.process.exit.signal"] == 15
    # os._exit skips atexit, yet the spans made before it are there (fork and forkserver).
    for name in ("hard_exit", "forkserver_exit"):
        pid = rows[name].pid
        assert [s.name for s in run.db.spans(pid=pid) if s.name == "before-os-exit"], name
        assert rows[name].exit_code == 3


def test_nested_processes_form_a_tree(run_program: Any) -> None:
    """A spawn child that forks a grandchild: the grandchild sits under the child."""
    run = run_program(
        """
        p = mp.get_context("spawn").Process(target=nested, args=("fork",), name="middle")
        p.start(); p.join()
        """,
        helpers=CHILD_HELPERS,
    )
    assert run.returncode == 0, run.stderr[-800:]
    records = run.db.processes()
    assert [(r.name, r.depth) for r in records][1:] == [("middle", 1), ("grandchild", 2)]
    middle, grandchild = records[1], records[2]
    assert grandchild.parent_pid == middle.pid
    assert grandchild.trace_id == middle.trace_id


def test_pools_record_workers_and_each_task_under_the_submitter(run_program: Any) -> None:
    """Pool(maxtasksperchild=1) and ProcessPoolExecutor: workers in the tree, a span per
    task under the span that submitted it, a failed task marked."""
    run = run_program(
        """
        from concurrent.futures import ProcessPoolExecutor
        with tracer.start_as_current_span("submit-pool") as s1:
            with mp.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
                assert pool.map(square, range(4)) == [0, 1, 4, 9]
                pool.close(); pool.join()
        with tracer.start_as_current_span("submit-executor") as s2:
            with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
                ok = ex.submit(square, 5)
                bad = ex.submit(square, "x")
                assert ok.result() == 25
                try:
                    bad.result()
                except TypeError as exc:
                    emit(error=type(exc).__name__)
        emit(pool_span=format(s1.get_span_context().span_id, "016x"),
             executor_span=format(s2.get_span_context().span_id, "016x"))
        """,
        helpers=CHILD_HELPERS + "\ndef square(x):\n    return x * x\n",
        # A span for every pool task (the default makes them for failed ones only); the
        # workers get the option from the program, as they get its settings.
        env={"PROCSCOPE_LIFECYCLE_SPANS": "all"},
    )
    assert run.returncode == 0, run.stderr[-800:]
    ids = run.line("pool_span")
    assert run.line("error")["error"] == "TypeError"  # the exception crosses unchanged
    records = run.db.processes()
    workers = [r for r in records if r.name.startswith("ForkPoolWorker")]
    # maxtasksperchild=1: a fresh worker for each of the 4 tasks (and the pool keeps 2
    # alive, so replacements too); closed and joined, every one exited with 0.
    assert len(workers) >= 4 and all(w.exit_code == 0 for w in workers)
    assert len([r for r in records if r.name.startswith("SpawnProcess")]) >= 1
    tasks = run.db.spans(attributes={"procscope.lifecycle.kind": "pool_task"})
    pool_tasks = [t for t in tasks if t.attributes["procscope.pool.kind"] == "multiprocessing.pool"]
    executor_tasks = [t for t in tasks if t not in pool_tasks]
    assert len(pool_tasks) == 4 and len(executor_tasks) == 2
    assert {t.parent_span_id for t in pool_tasks} == {ids["pool_span"]}
    assert {t.parent_span_id for t in executor_tasks} == {ids["executor_span"]}
    # Each pool task ran in a worker process of its own, not in the program.
    assert len({t.pid for t in pool_tasks}) == 4
    assert {t.pid for t in pool_tasks} <= {w.pid for w in workers}
    (failed,) = [t for t in executor_tasks if t.status_code == "ERROR"]
    assert failed.events[0].attributes["exception.type"] == "TypeError"


def test_python_subprocess_is_parented_and_set_up_like_its_parent(run_program: Any) -> None:
    """subprocess.run of Python: the child's spans under the spawn span (TRACEPARENT), the
    same DB and level, TRACEPARENT consumed; a non-Python child: its exit code."""
    code = (
        "import os, sys; from opentelemetry import trace;"
        "from procscope.core import shared_state;"
        "t = trace.get_tracer('x');"
        "s = t.start_span('in-subprocess'); s.end();"
        "print(shared_state.settings().level, os.environ.get('TRACEPARENT'), os.getpid());"
        "sys.exit(7)"
    )
    run = run_program(
        f"""
        import subprocess
        done = subprocess.run([sys.executable, "-c", {code!r}], capture_output=True, text=True)
        emit(out=done.stdout.strip(), rc=done.returncode)
        done = subprocess.run(["sh", "-c", "exit 3"])
        emit(sh_rc=done.returncode)
        done = subprocess.run([sys.executable, "-c", "raise ValueError('in child')"],
                              capture_output=True)
        emit(raised_rc=done.returncode)
        """,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", level="minimal")',
    )
    assert run.returncode == 0, run.stderr[-800:]
    level, traceparent, child_pid = run.line("out")["out"].split()
    assert (level, traceparent, run.line("out")["rc"]) == ("minimal", "None", 7)
    rows = run.by_name()
    (python_row,) = [r for r in run.db.processes() if r.pid == int(child_pid)]
    assert (python_row.kind, python_row.start_method, python_row.exit_code) == (
        "subprocess",
        "subprocess",
        7,
    )
    (inner,) = run.db.spans(name="in-subprocess")
    assert inner.pid == python_row.pid
    assert inner.parent_span_id == python_row.run_span_id
    assert inner.trace_id == python_row.trace_id
    # An unhandled exception in a Python subprocess: on its own process span.
    assert run.line("raised_rc")["raised_rc"] == 1
    (raised,) = [r for r in run.db.processes() if r.error_message == "ValueError: in child"]
    assert (raised.kind, raised.exit_code) == ("subprocess", 1)
    sh = rows["sh"]
    assert (sh.exit_code, sh.error, sh.run_span_id) == (3, True, None)
    (spawn,) = run.db.spans(name="spawn sh")
    assert spawn.attributes["process.command_args"] == ["sh", "-c", "exit 3"]


def test_os_fork_child_is_recorded_and_its_spans_flushed(run_program: Any) -> None:
    """os.fork: the child's spans survive os._exit; waitpid gives the parent its exit code."""
    run = run_program(
        """
        pid = os.fork()
        if pid == 0:
            with tracer.start_as_current_span("in-forked-child"):
                pass
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        emit(child=pid, code=os.waitstatus_to_exitcode(status))
        """
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert run.line("child")["code"] == 5
    row = run.by_name()["os.fork"]
    assert (row.pid, row.exit_code, row.start_method) == (run.line("child")["child"], 5, "os.fork")
    (inner,) = run.db.spans(name="in-forked-child")
    assert inner.parent_span_id == row.run_span_id


def test_messages_only_level_propagates_context_without_lifecycle_spans(
    run_program: Any,
) -> None:
    """Level messages_only: no process spans, but a child's spans join the parent's trace."""
    run = run_program(
        """
        with tracer.start_as_current_span("main-root") as root:
            emit(root=format(root.get_span_context().span_id, "016x"))
            p = mp.get_context("spawn").Process(target=child_work, args=(2,), name="quiet")
            p.start(); p.join()
        """,
        helpers=CHILD_HELPERS,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", level="messages_only")',
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert run.db.spans(attributes={"procscope.lifecycle.kind": "process"}) == []
    child_spans = run.db.spans(name="child-span-*")
    assert len(child_spans) == 2
    assert {s.parent_span_id for s in child_spans} == {run.line("root")["root"]}
    assert run.line("child")["level"] == "messages_only"


def test_unsampled_program_records_nothing_in_any_process(run_program: Any) -> None:
    """sample_rate 0: no span at all, from the program or from its children."""
    run = run_program(
        """
        with tracer.start_as_current_span("main-root"):
            for method in ("fork", "spawn"):
                p = mp.get_context(method).Process(target=child_work, args=(3,), name=method)
                p.start(); p.join()
        """,
        helpers=CHILD_HELPERS,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", sample_rate=0.0)',
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert len([x for x in run.lines if "child" in x]) == 2
    # No span was ever exported, so the exporter never even created the DB file.
    assert not run.db_path.exists() or run.db.span_count() == 0


@pytest.mark.skipif(sys.platform != "linux", reason="the CLI check reuses a Linux run")
def test_cli_processes_shows_the_tree_and_json(run_program: Any) -> None:
    """procscope processes: tree lines with ✗ for failures; --json rows; bad DB exit 2."""
    import json
    import subprocess

    run = run_program(
        """
        ctx = mp.get_context("fork")
        p = ctx.Process(target=nested, args=("fork",), name="middle"); p.start(); p.join()
        p = ctx.Process(target=crash, name="crasher"); p.start(); p.join()
        """,
        helpers=CHILD_HELPERS,
    )
    assert run.returncode == 0, run.stderr[-800:]
    cli = [sys.executable, "-c", "from procscope._cli import entry; entry()", "processes"]
    text = subprocess.run(
        [*cli, "--db", str(run.db_path)], capture_output=True, text=True, check=True
    ).stdout
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["PROCESS", "PID", "PARENT"]
    assert any(line.startswith("├─ middle") for line in lines)
    assert any(line.startswith("│  └─ grandchild") for line in lines)
    crashed = next(line for line in lines if "crasher" in line)
    assert crashed.startswith("└─ ✗ crasher") and "exit 1" in crashed
    rows = json.loads(
        subprocess.run(
            [*cli, "--db", str(run.db_path), "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [(r["name"], r["depth"]) for r in rows][1:] == [
        ("middle", 1),
        ("grandchild", 2),
        ("crasher", 1),
    ]
    assert rows[3]["exit_code"] == 1 and rows[3]["error"] is True
    missing = subprocess.run(
        [*cli, "--db", str(run.db_path.parent / "none" / "x.db")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


FOREIGN_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(
    not os.path.exists(FOREIGN_PYTHON)
    or os.path.dirname(os.path.abspath(sys.executable)) == os.path.dirname(FOREIGN_PYTHON),
    reason="needs a Python outside this environment at /usr/bin/python3",
)
def test_a_python_of_another_environment_gets_the_context_but_no_sitecustomize(
    run_program: Any,
) -> None:
    """Another Python gets TRACEPARENT and the settings only: it cannot load procscope,
    and must not print an error about it."""
    code = (
        "import os; print(os.environ.get('TRACEPARENT', 'none')[:3], os.environ['PROCSCOPE_LEVEL'])"
    )
    run = run_program(
        f"""
        import subprocess
        done = subprocess.run([{FOREIGN_PYTHON!r}, "-c", {code!r}], capture_output=True, text=True)
        emit(out=done.stdout, err=done.stderr, rc=done.returncode)
        """,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", level="minimal")',
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert run.line("out") == {"out": "00- minimal\n", "err": "", "rc": 0}


def test_nested_pools_form_a_tree(run_program: Any) -> None:
    """A ProcessPoolExecutor worker that runs its own Pool: pool workers under that worker."""
    run = run_program(
        """
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as ex:
            emit(inner=ex.submit(inner_pool).result())
        """,
        helpers=CHILD_HELPERS
        + """
def double(x):
    return 2 * x

def inner_pool():
    with mp.get_context("fork").Pool(2) as pool:
        result = pool.map(double, range(4))
        pool.close(); pool.join()
    return {"pid": os.getpid(), "result": result}
""",
    )
    assert run.returncode == 0, run.stderr[-800:]
    inner = run.line("inner")["inner"]
    assert inner["result"] == [0, 2, 4, 6]
    records = run.db.processes()
    (executor_worker,) = [r for r in records if r.pid == inner["pid"]]
    assert executor_worker.depth == 1 and executor_worker.start_method == "fork"
    pool_workers = [r for r in records if r.name.startswith("ForkPoolWorker")]
    assert len(pool_workers) == 2
    assert all(w.depth == 2 and w.parent_pid == executor_worker.pid for w in pool_workers)
    assert all(w.exit_code == 0 for w in pool_workers)
    # In tree order: the pool's workers come right after the executor worker.
    index = records.index(executor_worker)
    assert {r.pid for r in records[index + 1 : index + 3]} == {w.pid for w in pool_workers}


def test_procscope_run_records_children_of_every_start_method(tmp_path: Any) -> None:
    """Under `procscope run` (set up by sitecustomize, children too): one row per child,
    none for the fork server's own forks."""
    import subprocess

    from procscope.exporters.tracedb import TraceDB

    script = tmp_path / "app.py"
    script.write_text(
        "import multiprocessing as mp\n"
        "def work():\n"
        "    pass\n"
        "if __name__ == '__main__':\n"
        "    for m in ('fork', 'forkserver', 'spawn'):\n"
        "        p = mp.get_context(m).Process(target=work, name=m); p.start(); p.join()\n"
    )
    db_path = tmp_path / "run.db"
    env = dict(os.environ)
    env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "procscope_messaging,procscope_state"
    cli = [sys.executable, "-c", "from procscope._cli import entry; entry()"]
    done = subprocess.run(
        [*cli, "run", "--db", str(db_path), "--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-800:]
    with TraceDB(db_path) as db:
        records = db.processes()
    assert [(r.name, r.start_method, r.depth, r.exit_code) for r in records[1:]] == [
        ("fork", "fork", 1, 0),
        ("forkserver", "forkserver", 1, 0),
        ("spawn", "spawn", 1, 0),
    ]
    assert records[0].kind == "program"


def test_plugin_alone_with_the_programs_own_provider(run_program: Any) -> None:
    """Without procscope.setup(): the instrumentor on the program's global provider; a
    spawn child instruments itself with the provider its main module sets up."""
    run = run_program(
        """
        from procscope.instrumentation.lifecycle import LifecycleInstrumentor
        LifecycleInstrumentor().instrument()
        with tracer.start_as_current_span("main-root"):
            p = mp.get_context("spawn").Process(target=child_work, args=(3,), name="alone")
            p.start(); p.join()
        provider.shutdown()
        """,
        helpers=CHILD_HELPERS
        + """
# The program's own OpenTelemetry set-up, at import: the spawn child runs it too.
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from procscope.exporters.tracedb import TraceDBSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(TraceDBSpanExporter(path=sys.argv[1])))
trace.set_tracer_provider(provider)
""",
        setup="",
    )
    assert run.returncode == 0, run.stderr[-800:]
    row = run.by_name()["alone"]
    assert (row.start_method, row.exit_code) == ("spawn", 0)
    assert row.run_span_id is not None
    child_spans = run.db.spans(name="child-span-*")
    assert len(child_spans) == 3 and {s.parent_span_id for s in child_spans} == {row.run_span_id}
    # No procscope.setup() anywhere: the child's level is the built-in default.
    assert run.line("child")["level"] == "full"


def test_forking_while_another_thread_exports_loses_and_hangs_nothing(run_program: Any) -> None:
    """Forks while a thread keeps making spans (exports under way): every child exits at
    once and delivers its process span (a fork in the middle of an SQLite write would
    otherwise leave the child stuck on a lock copied from the parent)."""
    run = run_program(
        """
        import multiprocessing as mp
        import threading
        stop = threading.Event()
        def noise():
            while not stop.is_set():
                with tracer.start_as_current_span("noise"):
                    pass
                time.sleep(0.0005)
        thread = threading.Thread(target=noise, daemon=True); thread.start()
        ctx = mp.get_context("fork")
        for i in range(100):
            p = ctx.Process(target=int, name=f"c{i}"); p.start(); p.join()
        stop.set(); thread.join()
        """,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", level="minimal")',
        env={"OTEL_BSP_SCHEDULE_DELAY": "5"},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-800:]
    children = [r for r in run.db.processes() if r.name.startswith("c")]
    assert len(children) == 100
    assert [r.name for r in children if r.run_span_id is None] == []


SIGTERM_ON_ANOTHER_THREAD = """
import multiprocessing as mp, signal, threading

def blocked_when_sigterm_lands_elsewhere(lock):
    # SIGTERM is handled (by CPython's C handler) on another thread while the main thread
    # sleeps in a lock's system call, which nothing then interrupts: the state a pool
    # worker is left in when its pool's SIGTERM arrives just before it blocks.
    def send_to_this_thread():
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=send_to_this_thread).start()
    lock.acquire()  # held by the parent for ever
"""


@pytest.mark.parametrize(("method", "rate"), [("fork", 1.0), ("spawn", 1.0), ("fork", 0.0)])
def test_sigterm_that_lands_while_the_main_thread_blocks_still_ends_the_child(
    run_program: Any, method: str, rate: float
) -> None:
    """The child dies of that SIGTERM (it used to sleep for ever) and records it; also
    when its trace is not sampled (no span of its own, procscope's handler inherited)."""
    run = run_program(
        f"""
        ctx = mp.get_context("{method}")
        lock = ctx.Lock(); lock.acquire()
        p = ctx.Process(target=blocked_when_sigterm_lands_elsewhere, args=(lock,), name="kid")
        p.start(); p.join(30)
        emit(exitcode=p.exitcode)
        if p.exitcode is None:
            p.kill(); p.join()
        """,
        helpers=SIGTERM_ON_ANOTHER_THREAD,
        setup=f'procscope.setup(db=sys.argv[1], exporter="tracedb", sample_rate={rate})',
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert run.line("exitcode")["exitcode"] == -signal.SIGTERM
    if rate == 0.0:
        return  # nothing recorded, by choice: what matters is that it died
    kid = run.by_name()["kid"]
    assert (kid.exit_signal, kid.error) == (15, True)
    (own,) = [s for s in run.db.spans(pid=kid.pid) if s.name == "process kid"]
    assert own.attributes["procscope.process.exit.signal"] == 15
