"""procscope's ``sys.excepthook``: it keeps no reference to the exception it sees, and
invents no error for a process whose exception was only reported, then handled.

Each program is run twice where it matters, plainly (procscope imported, not set up) and
under ``procscope.setup()``.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

# --- the excepthook: no reference kept, no error invented ------------------------------------

HANDLED = """
import gc, threading, weakref

class Payload:
    pass

refs = []

def fail():
    payload = Payload()   # a frame local: held by the traceback, and only by it
    refs.append(weakref.ref(payload))
    raise ValueError("reported, then handled")

def report_through_sys_excepthook():
    try:
        fail()
    except ValueError:
        sys.excepthook(*sys.exc_info())   # as code.interact and IDEs do
"""


REPORTERS = {
    # The program shows the exception itself, as code.interact and IDEs do.
    "main thread": "report_through_sys_excepthook()",
    # A threading.excepthook that hands a thread's exception to sys.excepthook (common).
    "thread": """
    threading.excepthook = lambda a: sys.excepthook(a.exc_type, a.exc_value, a.exc_traceback)
    worker = threading.Thread(target=fail, name="failing")
    worker.start(); worker.join()   # the Thread object is kept, as programs keep them
    """,
}


@pytest.mark.parametrize("spans", ["errors", "all"])
@pytest.mark.parametrize("reporter", sorted(REPORTERS))
def test_an_exception_shown_by_sys_excepthook_is_freed_and_no_error(
    run_plain_and_traced: Any, reporter: str, spans: str
) -> None:
    """An exception shown through sys.excepthook, the program living on, is freed as
    plainly; the program then ending with sys.exit(0) is recorded as exit 0, no error."""
    body = textwrap.dedent(REPORTERS[reporter]) + textwrap.dedent("""
    gc.collect()
    emit(alive=refs[0]() is not None)
    sys.exit(0)
    """)
    env = {"PROCSCOPE_LIFECYCLE_SPANS": spans}
    plain, traced = run_plain_and_traced(body, helpers=HANDLED, env=env)
    assert plain.line("alive") == {"alive": False}
    assert traced.returncode == 0, traced.stderr
    assert traced.line("alive") == {"alive": False}
    (program,) = [r for r in traced.db.processes() if r.kind == "program"]
    assert (program.exit_code, program.error) == (0, False)


def test_a_subprocess_that_reports_an_exception_and_exits_0_is_no_error(
    run_program: Any,
) -> None:
    """The same in a Python subprocess, whose own span records how it ended."""
    child = (
        "import sys\n"
        "try:\n    raise ValueError('shown only')\n"
        "except ValueError:\n    sys.excepthook(*sys.exc_info())\n"
    )
    body = f"""
    import subprocess
    done = subprocess.run([sys.executable, "-c", {child!r}], capture_output=True, text=True)
    emit(code=done.returncode)
    """
    run = run_program(body)
    assert run.returncode == 0, run.stderr
    assert run.line("code") == {"code": 0}
    (child_record,) = [r for r in run.db.processes() if r.kind == "subprocess"]
    assert (child_record.exit_code, child_record.error) == (0, False)
    runs = [s for s in run.db.spans() if s.name.startswith("process ")]
    assert runs and all(s.status_code != "ERROR" for s in runs)


def test_a_program_dying_of_an_exception_still_records_it(run_program: Any) -> None:
    """The fatal case is unchanged: exit code 1, error, the exception's type and message."""
    run = run_program('raise KeyError("gone")', helpers=HANDLED)
    assert run.returncode == 1
    (program,) = [r for r in run.db.processes() if r.kind == "program"]
    assert (program.exit_code, program.error) == (1, True)
    assert program.error_message == "KeyError: 'gone'"
    (end,) = [s for s in run.db.spans() if s.name.startswith("end ")]
    (event,) = [e for e in end.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "KeyError"
    assert 'raise KeyError("gone")' in event.attributes["exception.stacktrace"]


WRAPPING_HOOKS = {
    "function": """
    previous = sys.excepthook
    def wrapper(*info):
        print("program's hook", file=sys.stderr)
        previous(*info)
    sys.excepthook = wrapper
    """,
    "callable object": """
    class Wrapper:
        def __init__(self, previous):
            self.previous = previous
        def __call__(self, *info):
            print("program's hook", file=sys.stderr)
            self.previous(*info)
    sys.excepthook = Wrapper(sys.excepthook)
    """,
}


@pytest.mark.parametrize("hook", sorted(WRAPPING_HOOKS))
def test_a_program_hook_in_front_of_procscopes_still_sees_the_death(
    run_program: Any, hook: str
) -> None:
    """A sys.excepthook of the program's own that calls procscope's: the program dying of
    an exception is still recorded as an error, with the exception."""
    run = run_program(WRAPPING_HOOKS[hook] + 'raise KeyError("gone")\n')
    assert run.returncode == 1
    assert "program's hook" in run.stderr
    (program,) = [r for r in run.db.processes() if r.kind == "program"]
    assert (program.exit_code, program.error) == (1, True)
    assert program.error_message == "KeyError: 'gone'"


def test_under_python_i_an_exception_is_not_the_end(tmp_path: Any) -> None:
    """Under ``python -i`` the prompt follows an unhandled exception; the process then
    exits 0 (here at the end of its input), and is recorded so, with no error."""
    import os
    import subprocess
    import sys

    from procscope.exporters.tracedb import TraceDB

    script = tmp_path / "interactive.py"
    script.write_text(
        "import sys, procscope\n"
        "procscope.setup(db=sys.argv[1], exporter='tracedb')\n"
        "raise KeyError('shown, then the prompt')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    done = subprocess.run(
        [sys.executable, "-i", str(script), str(tmp_path / "trace.db")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with TraceDB(tmp_path / "trace.db") as db:
        (program,) = [r for r in db.processes() if r.kind == "program"]
    assert (program.exit_code, program.error) == (0, False)
