"""The program at the top records its own end: exit code, exception, os._exit."""

from __future__ import annotations

from typing import Any

import pytest

HELPERS = """
import multiprocessing as mp

def child():
    pass
"""


@pytest.mark.parametrize(
    ("ending", "code", "method"),
    [("sys.exit(4)", 4, "fork"), ("os._exit(5)", 5, "spawn"), ("sys.exit()", 0, "forkserver")],
)
def test_program_end_is_recorded_with_its_exit_code_and_children_record_none(
    run_program: Any, ending: str, code: int, method: str
) -> None:
    """The program's row has its exit code; its child is a process, not a second program."""
    body = f"""
    p = mp.get_context("{method}").Process(target=child, name="kid")
    p.start(); p.join()
    emit(kid=p.pid)
    {ending}
    """
    run = run_program(body, helpers=HELPERS)
    assert run.returncode == code, run.stderr
    records = run.db.processes()
    programs = [r for r in records if r.kind == "program"]
    assert len(programs) == 1
    (program,) = programs
    assert (program.exit_code, program.error) == (code, code != 0)
    kid = next(r for r in records if r.name == "kid")
    assert (kid.pid, kid.parent_pid, kid.exit_code) == (run.line("kid")["kid"], program.pid, 0)
    ends = [s for s in run.db.spans() if s.name.startswith("end ")]
    assert len(ends) == 1  # none from the child, whatever its start method


def test_program_dying_of_an_exception_is_an_error_with_its_message(run_program: Any) -> None:
    """An unhandled exception in the main thread: exit code 1, the exception shown."""
    run = run_program('raise LookupError("no such order")')
    assert run.returncode == 1
    (program,) = [r for r in run.db.processes() if r.kind == "program"]
    assert program.exit_code == 1 and program.error
    assert program.error_message == "LookupError: no such order"
