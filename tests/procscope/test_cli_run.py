"""``procscope run -- CMD``: the program runs set up, keeps its exit status and signals."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

PROCSCOPE = str(Path(sys.executable).parent / "procscope")


def test_exit_status_is_the_programs(run_app: Any) -> None:
    """procscope run exits with the program's own status."""
    result = run_app(
        "import sys; sys.exit(7)", prefix=[PROCSCOPE, "run", "--exporter", "none", "--", "python"]
    )
    assert result.returncode == 7, result.stderr


def test_program_runs_with_procscope_set_up_and_options_applied(
    run_app: Any, spans_in: Any, tmp_path: Path
) -> None:
    """Options become the program's settings; its spans are exported; python is ours."""
    result = run_app(
        """
        import sys
        from opentelemetry import trace
        from procscope.core import shared_state
        from procscope._api import current_scope
        scope = current_scope()
        print("settings", scope.settings.level, scope.settings.sample_rate, scope.settings.db)
        print("interpreter", sys.executable)
        with trace.get_tracer("app").start_as_current_span("under-run"):
            pass
        """,
        prefix=[
            PROCSCOPE,
            "run",
            "--exporter",
            "console",
            "--level",
            "minimal",
            "--sample-rate",
            "0.5",
            "--db",
            "here.db",
            "--",
            "python",
        ],
    )
    assert result.returncode == 0, result.stderr
    assert f"settings minimal 0.5 {tmp_path / 'here.db'}" in result.stdout
    assert f"interpreter {sys.executable}" in result.stdout
    # A 0.5 head rate may drop either span (the program's, the record of its end); the
    # program still ran set up either way.
    assert {s["name"] for s in spans_in(result.stdout)} <= {"under-run", "end app.py"}


def test_a_bad_option_is_named_as_given_and_ignored(run_app: Any) -> None:
    """--level verbose: one line naming --level (not an environment variable); the
    program still runs, at the level it would have had without the option."""
    result = run_app(
        "from procscope._api import current_scope; print('level', current_scope().settings.level)",
        prefix=[PROCSCOPE, "run", "--exporter", "none", "--level", "verbose", "--", "python"],
    )
    assert result.returncode == 0, result.stderr
    assert "level full" in result.stdout
    assert result.stderr.count("\n") == 1
    assert "bad value for --level: 'verbose'" in result.stderr
    assert "PROCSCOPE_LEVEL" not in result.stderr


def test_missing_command_is_a_usage_error(run_app: Any) -> None:
    """No command, or one that does not exist: exit 2 with one line on stderr."""
    result = run_app("pass", prefix=[PROCSCOPE, "run", "--", "no-such-program-xyz"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "command not found: no-such-program-xyz" in result.stderr


def test_command_that_is_not_executable_says_why(run_app: Any) -> None:
    """A script without execute permission: exit 2, one line saying why, not 'not found'."""
    result = run_app("pass", prefix=[PROCSCOPE, "run", "--"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot run" in result.stderr and "Permission denied" in result.stderr


def test_sigterm_reaches_the_program(start_app: Any) -> None:
    """SIGTERM sent to procscope run is the program's to handle."""
    proc = start_app(
        """
        import signal, sys, time
        def on_term(signum, frame):
            print("program got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        time.sleep(60)
        """,
        prefix=[PROCSCOPE, "run", "--exporter", "none", "--", "python"],
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "program got SIGTERM" in out


def test_sigint_reaches_the_program(start_app: Any) -> None:
    """SIGINT sent to procscope run raises KeyboardInterrupt in the program."""
    proc = start_app(
        """
        import sys, time
        try:
            print("ready", flush=True)  # inside try: the signal may come at once
            time.sleep(60)
        except KeyboardInterrupt:
            print("program got KeyboardInterrupt", flush=True)
            sys.exit(130)
        """,
        prefix=[PROCSCOPE, "run", "--exporter", "none", "--", "python"],
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "program got KeyboardInterrupt" in out


def test_child_python_processes_inherit_the_settings(run_app: Any, tmp_path: Path) -> None:
    """A Python subprocess of the program starts with procscope set up, same settings."""
    result = run_app(
        """
        import subprocess, sys
        code = ("from procscope._api import current_scope; s = current_scope(); "
                "print('child', s.settings.level, s.settings.exporters)")
        print(subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True).stdout.strip())
        """,
        prefix=[PROCSCOPE, "run", "--exporter", "none", "--level", "states_only", "--", "python"],
    )
    assert result.returncode == 0, result.stderr
    assert "child states_only ()" in result.stdout


def test_spans_land_in_the_trace_db_by_default(run_app: Any, tmp_path: Path) -> None:
    """With no exporter named, procscope run records into the trace DB given by --db."""
    result = run_app(
        """
        from opentelemetry import trace
        with trace.get_tracer("app").start_as_current_span("into-the-db"):
            pass
        """,
        prefix=[PROCSCOPE, "run", "--db", "run.db", "--", "python"],
    )
    assert result.returncode == 0, result.stderr
    from procscope.exporters.tracedb import TraceDB

    assert "into-the-db" in [span.name for span in TraceDB(str(tmp_path / "run.db")).spans()]


_TWO_PROCESSES = """
import multiprocessing as mp

if __name__ == "__main__":
    child = mp.get_context("spawn").Process(target=print, args=("child",))
    child.start()
    child.join()
"""


def _run_on_a_terminal(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on a pseudo-terminal; its output."""
    import os
    import pty
    import subprocess

    main_fd, side_fd = pty.openpty()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=side_fd, stdout=side_fd, stderr=side_fd
    )
    os.close(side_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: every holder of the terminal's other side is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_run_says_where_it_recorded_on_a_terminal_only(write_app: Any, tmp_path: Path) -> None:
    """On a terminal, procscope run ends with one line on stderr naming the DB and a
    command that shows the run (once, not once per process); piped, it says nothing."""
    import subprocess

    from .conftest import clean_environ

    app = write_app(_TWO_PROCESSES)
    env = clean_environ()
    command = [PROCSCOPE, "run", "--db", "told.db", "--", "python", str(app)]
    status, output = _run_on_a_terminal(command, tmp_path, env)
    assert status == 0, output
    told = [line for line in output.splitlines() if line.startswith("procscope: recorded")]
    assert len(told) == 1, output
    assert f"recorded into {tmp_path / 'told.db'} (run " in told[0]
    shown_by = told[0].split("see it with: ")[1].strip()
    runs = subprocess.run(
        shown_by, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert runs.returncode == 0 and str(app) in runs.stdout, runs.stderr
    piped = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert piped.returncode == 0 and "procscope: recorded" not in piped.stderr + piped.stdout
