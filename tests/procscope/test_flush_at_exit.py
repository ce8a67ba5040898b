"""Spans are flushed however the program ends: normal exit, sys.exit, an exception, SIGTERM."""

from __future__ import annotations

import signal
from typing import Any

import pytest

PROGRAM = """
import os, signal, sys, time
{before}
import procscope
from opentelemetry import trace
procscope.setup(exporter="console")
with trace.get_tracer("app").start_as_current_span("recorded"):
    pass
{ending}
"""

WAIT_FOR_SIGNAL = """
print("ready", flush=True)
time.sleep(60)
print("not interrupted")
"""


@pytest.mark.parametrize(
    ("ending", "expected_status"),
    [("pass", 0), ("sys.exit(3)", 3), ("raise RuntimeError('boom')", 1)],
)
def test_spans_flushed_at_normal_exit_sys_exit_and_exception(
    run_app: Any, spans_in: Any, ending: str, expected_status: int
) -> None:
    """Every way of ending that runs atexit exports what was recorded, and how it ended."""
    result = run_app(PROGRAM.format(before="", ending=ending))
    assert result.returncode == expected_status
    spans = spans_in(result.stdout)
    assert [s["name"] for s in spans] == ["recorded", "end app.py"]
    assert spans[1]["attributes"]["process.exit.code"] == expected_status
    assert (spans[1]["status"]["status_code"] == "ERROR") is (expected_status != 0)


def _terminate(proc: Any) -> tuple[str, str]:
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)  # type: ignore[no-any-return]


def test_sigterm_with_default_action_flushes_and_still_dies_by_sigterm(
    start_app: Any, spans_in: Any
) -> None:
    """A SIGTERM'd program exports its spans and its parent still sees death by SIGTERM."""
    proc = start_app(PROGRAM.format(before="", ending=WAIT_FOR_SIGNAL))
    out, err = _terminate(proc)
    assert proc.returncode == -signal.SIGTERM, err
    spans = spans_in(out)
    assert [s["name"] for s in spans] == ["recorded", "end app.py"]
    assert spans[1]["attributes"]["procscope.process.exit.signal"] == signal.SIGTERM
    assert "not interrupted" not in out


def test_program_sigterm_handler_is_kept(start_app: Any, spans_in: Any) -> None:
    """A SIGTERM handler the program installed is not replaced, and spans still flush."""
    before = """
def on_term(signum, frame):
    print("program handler ran", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
"""
    proc = start_app(PROGRAM.format(before=before, ending=WAIT_FOR_SIGNAL))
    out, err = _terminate(proc)
    assert proc.returncode == 0, err
    assert "program handler ran" in out
    spans = spans_in(out)
    assert [s["name"] for s in spans] == ["recorded", "end app.py"]
    assert spans[1]["attributes"]["process.exit.code"] == 0  # its handler's sys.exit(0)


def test_shutdown_restores_default_sigterm(run_app: Any) -> None:
    """After shutdown() SIGTERM is the program's again, left as it found it."""
    result = run_app(
        """
        import signal
        import procscope
        procscope.setup(exporter="none")
        print("during", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        procscope.shutdown()
        print("after", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
    )
    assert "during False" in result.stdout and "after True" in result.stdout


def test_sigterm_while_the_main_thread_is_exporting_does_not_hang(start_app: Any) -> None:
    """SIGTERM arriving while the main thread holds the exporter's lock still ends the
    program: the flush waits at most its budget instead of waiting on itself."""
    proc = start_app(
        """
        import sys
        import procscope
        from opentelemetry import trace
        scope = procscope.setup(exporter="console")
        tracer = trace.get_tracer("app")
        for i in range(2000):
            with tracer.start_as_current_span("big", attributes={"pad": "x" * 500}):
                pass
        print("ready", file=sys.stderr, flush=True)
        # Nobody reads our stdout: the console exporter blocks once the pipe is full,
        # inside force_flush, holding the batch processor's export lock.
        scope.force_flush()
        """
    )
    assert proc.stderr.readline().strip() == "ready"
    import time

    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    proc.stdout.close()
    proc.stderr.close()
