"""What procscope must not change in a subprocess it starts: the environment the child gets
(os.putenv, os.unsetenv, a preexec_fn's changes) and the errors ``Popen`` raises for bad
arguments.

Each program is run twice, plainly (procscope imported, not set up) and under
``procscope.setup()``, and what it prints must be the same.
"""

from __future__ import annotations

from typing import Any

# --- the environment of a subprocess ---------------------------------------------------------

ENV_CHILD = """
CHILD = ("import os, json; print(json.dumps({k: os.environ.get(k) for k in "
         "('H6_ADDED', 'H6_REMOVED', 'FRUIT')}))")
"""


def test_a_subprocess_sees_putenv_and_unsetenv_of_its_parent(run_plain_and_traced: Any) -> None:
    """env=None means the process's real environment: os.putenv/os.unsetenv included."""
    body = """
    import subprocess
    os.putenv("H6_ADDED", "added")
    os.unsetenv("H6_REMOVED")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
    emit(child=json.loads(out.stdout), pid=os.getpid())
    """
    env = {"H6_REMOVED": "still here"}
    plain, traced = run_plain_and_traced(body, helpers=ENV_CHILD, env=env)
    assert plain.line("child")["child"] == {"H6_ADDED": "added", "H6_REMOVED": None, "FRUIT": None}
    assert traced.returncode == 0, traced.stderr
    assert traced.line("child") == plain.line("child") | {"pid": traced.line("pid")["pid"]}
    # And the child is still traced, under the program.
    children = [r for r in traced.db.processes() if r.kind == "subprocess"]
    assert [r.parent_pid for r in children] == [traced.line("pid")["pid"]]


def test_a_subprocess_sees_what_its_preexec_fn_put_in_the_environment(
    run_plain_and_traced: Any,
) -> None:
    """A preexec_fn that calls os.putenv in the child (CPython's test_preexec) still works."""
    body = """
    import subprocess
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         preexec_fn=lambda: os.putenv("FRUIT", "apple"))
    emit(child=json.loads(out.stdout), pid=os.getpid())
    """
    plain, traced = run_plain_and_traced(body, helpers=ENV_CHILD)
    assert plain.line("child")["child"]["FRUIT"] == "apple"
    assert traced.returncode == 0, traced.stderr
    assert traced.line("child")["child"] == plain.line("child")["child"]
    children = [r for r in traced.db.processes() if r.kind == "subprocess"]
    assert [r.parent_pid for r in children] == [traced.line("pid")["pid"]]


# --- Popen with bad arguments -----------------------------------------------------------------

BAD_POPEN = """
import shutil
import subprocess

def outcome(*args, **kwargs):
    try:
        proc = subprocess.Popen(*args, **kwargs)
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    out, _ = proc.communicate()
    return ["ran", proc.returncode]

CODE = [sys.executable, "-c", "print('ran')"]
"""


def test_popen_with_bad_arguments_raises_as_plainly_and_prints_nothing(
    run_plain_and_traced: Any,
) -> None:
    """Bad arguments give the user the same error as plainly, and procscope prints nothing
    (CPython's test_subprocess test_invalid_args); an iterator of arguments, and a program
    named in bytes (test_executable_with_cwd and friends), still run."""
    body = """
    emit(results=[
        outcome(0),
        outcome(None),
        outcome([object()]),
        outcome([0, 1]),
        outcome(CODE, bufsize="x"),
        outcome(CODE, startupinfo=47),
        outcome(CODE, env={"A": object()}),
        outcome(CODE, env={"A=B": "x"}),
        outcome(CODE, env=[("A", "B")]),
        outcome(CODE, env={b"H6_BYTES": b"yes"}, stdout=subprocess.DEVNULL),
        outcome(iter(CODE), stdout=subprocess.DEVNULL),
        outcome([b"true"], executable=os.fsencode(shutil.which("true"))),
        outcome([os.fsencode(sys.executable), b"-c", b"print('ran')"],
                stdout=subprocess.DEVNULL),
        outcome(b"true", shell=True),
    ])
    """
    plain, traced = run_plain_and_traced(body, helpers=BAD_POPEN)
    assert plain.line("results")["results"][-1] == ["ran", 0]
    assert traced.returncode == 0, traced.stderr
    assert traced.stderr == plain.stderr == ""
    assert traced.line("results") == plain.line("results")


def test_popen_with_an_unknown_keyword_raises_type_error_silently(run_program: Any) -> None:
    """Popen(invalid_arg_name=1) raises TypeError and leaves stderr empty."""
    body = """
    emit(result=outcome(invalid_arg_name=1)[0])
    """
    run = run_program(body, helpers=BAD_POPEN)
    assert run.returncode == 0, run.stderr
    assert run.line("result") == {"result": "TypeError"}
    assert run.stderr == ""
