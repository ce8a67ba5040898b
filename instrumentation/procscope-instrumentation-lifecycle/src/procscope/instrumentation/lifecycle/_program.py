"""The end of the program itself: the process at the top, which nobody spawned under
procscope, so that no parent records how it ended.

When the lifecycle instrumentor is switched on in such a process, its end is recorded by
the process itself, as an instant ``end {name}`` span (role ``end``, kind ``program``),
made by whichever of these comes first:

* ``atexit``: the program returned, called ``sys.exit(n)``, or died of an unhandled
  exception (seen by ``sys.excepthook`` first: exit code 1, the exception recorded);
* ``os._exit(n)``;
* SIGTERM, where the program left it at its default (the handler that flushes at
  SIGTERM records it first).

``sys.exit`` is watched to know the exit code: a program that ends by raising
``SystemExit(n)`` itself, without ``sys.exit``, is recorded with the code 0 that Python
gives no way to tell apart from inside (docs/lifecycle.md). A SIGKILL or a crash inside C
code leaves no record: nobody above the program is there to see it.

Children (multiprocessing processes, ``os.fork`` children, Python subprocesses started
under procscope) are recorded by their ``process`` span and their parent's ``exit`` span
instead; so is a process forked from the program, which inherits this module's state.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from procscope.core import flight
from procscope.core.forksafe import ForkSafeLock
from procscope.core.guard import log_internal_error
from procscope.core.threadinfo import on_main_thread

from ._patching import Patches
from ._runtime import (
    EXIT_CODE,
    EXIT_SIGNAL,
    ExceptionRecord,
    end_with_error,
    process_spans_wanted,
    record_under,
    runtime,
    start_span,
    this_process_attributes,
)

# The pid whose end is watched (0: none). Compared at the end, so that a forked child,
# which inherits the atexit hook and all of this, records nothing as the program.
_watched_pid = [0]
# What is known of how the program is ending: the code given to sys.exit, the
# unhandled exception. Written by the program's own thread, read once at the end.
_exit_code: list[int | None] = [None]
_failure: list[ExceptionRecord] = []
_recorded = [False]
_lock = ForkSafeLock()  # (new in a fork child: its end is recorded whatever the parent did)
_atexit_registered = [False]


_child = [False]


def mark_child() -> None:
    """This process is a child, recorded by its own ``process`` span and its parent's
    ``exit`` span: not the program. (A forked child needs no mark: see _watched_pid.)"""
    _child[0] = True
    _watched_pid[0] = 0


def watch() -> None:
    """Record this process's end as the program's (called at instrument time)."""
    if _child[0] or _watched_pid[0] == os.getpid():
        return
    _watched_pid[0] = os.getpid()
    _exit_code[0] = None
    _failure.clear()
    _recorded[0] = False
    if not _atexit_registered[0]:
        import atexit

        # Registered after the SDK provider's own atexit hook, so that it runs before it
        # (atexit runs last-registered first) and the span is flushed with the rest.
        atexit.register(_at_exit)
        _atexit_registered[0] = True


def watching() -> bool:
    return _watched_pid[0] == os.getpid() and not _recorded[0]


def note_failure(exc: BaseException | ExceptionRecord) -> None:
    """The program's unhandled exception: what its end records is taken now, the exception
    itself is not kept (it would keep every frame of the failed call alive)."""
    if watching() and not _failure:
        _failure.append(exc if isinstance(exc, ExceptionRecord) else ExceptionRecord(exc))


def _program_name() -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 in ("", "-c"):
        return "python"
    if argv0 == "-m":
        return "python -m"
    return os.path.basename(argv0)


def _is_multiprocessing_helper() -> bool:
    # The fork server and the resource tracker are started as `python -c "from
    # multiprocessing.<x> import main; main(...)"`: machinery, not the program.
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            return b"from multiprocessing." in handle.read()
    except OSError:
        return False


def record_end(code: int | None = None, *, exit_signal: int | None = None) -> None:
    """Record the program's end (once): ``code`` if it is known here, else what sys.exit
    and the excepthook saw."""
    if not watching() or not runtime.active or not process_spans_wanted():
        return
    with _lock:
        if _recorded[0]:
            return
        _recorded[0] = True
    if _is_multiprocessing_helper():
        return
    failure = _failure[0] if _failure else None
    if code is None and exit_signal is None:
        code = 1 if failure is not None else (_exit_code[0] or 0)
    if not record_under(None):
        _flight_at_end(code, exit_signal, failure, None)
        return
    name = _program_name()
    attributes = this_process_attributes("program", "end", name)
    span = start_span("end " + name, attributes, None)
    from opentelemetry.trace import Status, StatusCode

    if failure is not None:
        end_with_error(span, failure)
        flight.claim(span.get_span_context())  # (its trigger: _flight_at_end)
    if exit_signal is not None:
        span.set_attribute(EXIT_SIGNAL, exit_signal)
        span.set_status(Status(StatusCode.ERROR, f"killed by signal {exit_signal}"))
    else:
        span.set_attribute(EXIT_CODE, code)
        if code and failure is None:
            span.set_status(Status(StatusCode.ERROR, f"exit code {code}"))
    span.end()
    _flight_at_end(code, exit_signal, failure, span.get_span_context())


def _flight_at_end(code: int | None, exit_signal: int | None, failure: Any,
                   span_context: Any) -> None:
    from . import _ending  # (imports this module)

    _ending.flight_at_end(code, exit_signal, failure, span_context)


def _at_exit() -> None:
    try:
        record_end()
    except Exception:  # noqa: BLE001
        log_internal_error()


def _exit_code_of(arg: Any) -> int:
    # As Python turns the argument of sys.exit() into the process's exit status.
    if arg is None:
        return 0
    if isinstance(arg, int):
        return arg & 0xFF
    return 1


def _make_sys_exit(original: Any) -> Any:
    def exit(status: Any = None, /) -> None:
        try:
            if watching() and on_main_thread():
                # Only the main thread's sys.exit ends the program; elsewhere it ends a
                # thread. The last call wins: one whose SystemExit the program caught,
                # and that a normal end follows, is taken for the end (docs/lifecycle.md).
                _exit_code[0] = _exit_code_of(status)
        except Exception:  # noqa: BLE001
            log_internal_error()
        original(status)

    return exit


def instrument(patches: Patches) -> None:
    patches.patch(sys, "exit", _make_sys_exit)
