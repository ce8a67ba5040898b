"""A process's own ``process`` span, and ending it (and flushing) however the process ends.

At most one such span exists per process: the child's life. It is ended exactly once, by
whichever comes first: the end of multiprocessing's bootstrap, ``os._exit`` (which skips
atexit: how fork and forkserver children, and pool workers, always end), SIGTERM, or
atexit for ``os.fork`` children and Python subprocesses. Each of these then flushes the
provider within a time budget, because none of them, except atexit, gives the SDK's own
shutdown hook a chance to run.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from opentelemetry import trace

from procscope.core import _flight_mirror, _flight_signal, flight
from procscope.core.cheap_child import called_by_the_interpreter
from procscope.core.guard import log_internal_error
from procscope.core.threadinfo import on_main_thread

from . import _program, _sigwatch
from ._patching import Patches
from ._runtime import (
    EXIT_FLUSH_MILLIS,
    ExceptionRecord,
    end_with_error,
    exception_reason,
    flight_trigger,
    flush,
    runtime,
    set_exit_status,
    start_span,
)

# The process's own span; [span] or []. A list so that taking it is one atomic pop.
_run: list[Any] = []
_failure: list[ExceptionRecord] = []
# True while a child's flight recorder waits for its end (flight_child_start).
_flight_run: list[bool] = [False]
# True in a multiprocessing.Pool worker: see _end_for_signal.
_pool_worker: list[bool] = [False]
_sigterm_installed = False
# A SIGTERM-ed child flushes within the exit budget too (see _runtime.EXIT_FLUSH_MILLIS);
# the margin lets the helper end the span before its own flush is cut.
SIGTERM_FLUSH_SECONDS = EXIT_FLUSH_MILLIS / 1000 + 0.25
# How long an abnormal end waits for its flight recorder dump to reach the processors
# before the exit flush (docs/flight-recorder.md): a part of the exit budget.
FLIGHT_EXIT_WAIT = 0.3
# How long a child's end waits for a dump under way to have staged its records.
STAGING_EXIT_WAIT = 1.0


def begin_run(
    name: str, attributes: dict[str, Any], ctx: Any, *, pool_worker: bool = False,
    span_id: int | None = None, mirror: bool = True, start_time: int | None = None,
) -> Any:
    """Start this process's span and make SIGTERM end it; returns the span. ``mirror``:
    see :func:`flight_child_start` (False in an ``os.fork`` child)."""
    span = start_span(name, attributes, ctx, start_time=start_time, span_id=span_id)
    _run[:] = [span]
    _failure.clear()
    _pool_worker[0] = pool_worker
    _install_sigterm()
    flight_child_start(mirror)
    return span


def current_run() -> Any:
    return _run[0] if _run else None


def note_failure(exc: BaseException | ExceptionRecord) -> None:
    """An unhandled exception of the process (recorded when its span ends); what is
    recorded is taken now, the exception itself is not kept."""
    if (_run or flight.append is not None) and not _failure:
        _failure.append(exc if isinstance(exc, ExceptionRecord) else ExceptionRecord(exc))
        if not isinstance(exc, ExceptionRecord):
            flight.hold_targets()  # (the exception's frames still hold the target's locals)


def finish_run(
    code: int | None = None, *, exit_signal: int | None = None, expected: bool = False
) -> bool:
    """End the process's span (once) with what is known of its end, then flush.

    False when there was no span to end (nothing flushed)."""
    try:
        span = _run.pop() if _run else None
    except IndexError:  # another thread ended it first
        span = None
    if span is None:
        return False
    _flight_run[0] = False
    try:
        recorder = getattr(runtime.records, "recorder", None)
        if recorder is not None:
            recorder.at_exit()  # (the exit flush below delivers the span's record)
        if _failure:
            end_with_error(span, _failure[0])
            if not expected:
                flight.claim(span.get_span_context())  # (its trigger: flight_at_end)
        if exit_signal is not None:
            set_exit_status(span, -exit_signal, expected=expected)
        else:
            set_exit_status(span, code)
        span.end()
        if not expected:
            flight_at_end(code, exit_signal, _failure[0] if _failure else None,
                          span.get_span_context())
    except Exception:  # noqa: BLE001
        log_internal_error()
    _flush_quietly()
    end_mirror()
    return True


def flight_child_start(mirror: bool = True) -> None:
    """In a child, sampled or not: its abnormal end is a trigger, and its ring is
    mirrored to disk (for a SIGKILL). Not in an ``os.fork`` child (``mirror`` False): the
    mirror's thread would be a thread that the plain child does not have."""
    if flight.append is not None:
        _flight_run[0] = True
        if mirror:
            _flight_mirror.start()
        if not flight.mirrored:  # (else its thread writes it: _flight_signal)
            _flight_signal.write_pending_marker()


def flight_child_end(code: int | None, exit_signal: int | None = None) -> None:
    """The end of a child that has no process span (not sampled): its abnormal end
    still writes the flight recorder out (finish_run does it for the others)."""
    if not _flight_run[0]:
        return
    _flight_run[0] = False
    try:
        flight_at_end(code, exit_signal, _failure[0] if _failure else None, None)
    except Exception:  # noqa: BLE001
        log_internal_error()


def end_mirror() -> None:
    """At a child's end, after its exit flush: remove its mirror (its ring's copy on
    disk), unless the dump of its end is still being made. A child's exit waits only a
    part of a second for its dump (FLIGHT_EXIT_WAIT, then the exit flush), and a full
    ring takes seconds: the exit would cut the dump short and lose the records it had
    not handed on yet. The mirror is then left for the parent, which makes the
    recording from it when it reaps the child, as for a SIGKILL
    (``_processes.record_reap``). A child's own dump into the trace DB is staged first
    (``_flight_stage``), whatever its size, and needs no mirror: the parent makes its
    spans from the staged row, without storing one twice. Without the trace DB (OTLP),
    spans the dump had handed on before the exit may be stored twice: never lost."""
    if not flight.mirrored:
        return
    try:
        # (imported by the mirror's start already: a look-up, not an import)
        from procscope.core import _flight_spans, _flight_stage

        if _flight_spans.dump_running() and _flight_stage.waiting():
            # A dump triggered just before a good end (a span that raised, say): its
            # records are staged within milliseconds, normally. Waited for, briefly,
            # rather than leave the mirror and have the parent make a second recording,
            # "cut short", of the same records (seen on a loaded two-core machine).
            deadline = time.monotonic() + STAGING_EXIT_WAIT
            while _flight_stage.waiting() and time.monotonic() < deadline:
                time.sleep(0.005)
        if not _flight_spans.dump_running() or not _flight_stage.waiting():
            _flight_mirror.stop()
    except Exception:  # noqa: BLE001
        log_internal_error()


def flight_at_end(
    code: int | None, exit_signal: int | None, failure: ExceptionRecord | None, span_context: Any
) -> None:
    """An abnormal end (an exception, a non-zero exit code, a signal) writes the flight
    recorder out before the exit flush, which then exports it."""
    if flight.append is None:
        return
    if failure is not None:
        reason = exception_reason("process", failure)
        flight.note(flight.ERROR, "process", failure.event, failure.description)
    elif exit_signal is not None:
        reason = f"killed by {signal_name(exit_signal)}"
    elif code:
        reason = f"exit code {code}"
    else:
        return
    flight_trigger(reason, span_context, wait=FLIGHT_EXIT_WAIT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _flush_quietly() -> None:
    try:
        flush()
    except Exception:  # noqa: BLE001
        log_internal_error()


def forget_inherited() -> None:
    """In a fork child: the parent's span is the parent's to end, not ours."""
    _run.clear()
    _failure.clear()
    _pool_worker[0] = False
    _flight_run[0] = False


# --- SIGTERM ----------------------------------------------------------------------------------


def _is_procscope_handler(handler: Any) -> bool:
    if getattr(handler, "_procscope_sigterm", False):
        return True
    owner = getattr(handler, "__self__", None)
    # procscope.setup()'s own flush handler (src/procscope/_scope.py), inherited on fork.
    return getattr(handler, "__name__", "") == "_on_sigterm" and type(owner).__name__ == "Scope"


def _end_for_signal(signum: int) -> None:
    # A pool worker cannot tell who sent SIGTERM, and its own pool ending is what sends
    # it almost always (Pool.terminate, Pool.__exit__): its span records the signal
    # without status ERROR. The parent's ``exit`` span decides: it carries the reason
    # terminated_by_pool when the pool did it, else it is an error (docs/lifecycle.md).
    try:
        expected = _pool_worker[0] and signum == signal.SIGTERM
        if not finish_run(exit_signal=signum, expected=expected):
            if not expected:
                flight_child_end(None, signum)
            _program.record_end(exit_signal=signum)
            _flush_quietly()
            end_mirror()
    except Exception:  # noqa: BLE001 -- never stop the process from dying
        pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _sigwatch.handler_started()
    # The handler interrupts the main thread wherever it was, possibly inside an export
    # holding the batch processor's (non-reentrant) lock: flushing right here could then
    # wait for ever. So the flush runs on a helper thread, waited for within a budget.
    try:
        helper = threading.Thread(
            target=_end_for_signal, args=(signum,), name="procscope-sigterm-flush", daemon=True
        )
        helper.start()
        helper.join(SIGTERM_FLUSH_SECONDS)
    except Exception:  # noqa: BLE001 -- never stop the process from dying
        pass
    # Die as SIGTERM would have made us die, so that the parent sees the same status.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


_on_sigterm._procscope_sigterm = True  # type: ignore[attr-defined]


def watch_sigterm_in_child() -> None:
    """In a child whose SIGTERM handler is procscope's (installed by begin_run, or
    inherited over fork even where this child records no span): make sure that a
    SIGTERM always gets it run (see _sigwatch). From the child's main thread."""
    try:
        if _is_procscope_handler(signal.getsignal(signal.SIGTERM)):
            _sigwatch.ensure_watch()
    except (ValueError, OSError, AttributeError):
        pass


def install_sigterm() -> None:
    """For the program at the top: its end at SIGTERM is recorded (see _program).

    Without the watch of _sigwatch: the wakeup fd of the program's own main thread is
    for its event loops to take (trio warns when it finds one taken)."""
    _install_sigterm()


_replaced_sigterm: list[Any] = [signal.SIG_DFL]


def _install_sigterm() -> bool:
    """Catch SIGTERM where it would kill the process silently; never replace a handler
    that the program installed (if it exits through sys.exit, the normal paths end the
    span). True when procscope's handler is the one installed."""
    global _sigterm_installed
    if not on_main_thread():
        return False
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL or _is_procscope_handler(current):
            if current is not _on_sigterm:
                # procscope.setup()'s flush handler, given back at uninstrument.
                _replaced_sigterm[0] = current
            signal.signal(signal.SIGTERM, _on_sigterm)
            _sigterm_installed = True
            return True
    except (ValueError, OSError, AttributeError):
        pass
    return False


def remove_sigterm() -> None:
    global _sigterm_installed
    if not _sigterm_installed:
        return
    _sigterm_installed = False
    _sigwatch.stop()
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _replaced_sigterm[0])
    except (ValueError, OSError, TypeError):
        pass
    _replaced_sigterm[0] = signal.SIG_DFL


# --- os._exit and atexit ----------------------------------------------------------------------


def _make_exit(original: Any) -> Any:
    def _exit(code: int, /) -> None:
        try:
            if runtime.active:
                if not finish_run(code if isinstance(code, int) else None):
                    flight_child_end(code if isinstance(code, int) else None)
                    _program.record_end(code if isinstance(code, int) else None)
                    _flush_quietly()
                    end_mirror()
        except BaseException:  # noqa: BLE001 -- os._exit must exit, whatever happened
            pass
        original(code)

    return _exit


def _at_exit() -> None:
    if runtime.active and _run:
        finish_run(None)


def attach_as_main_context(span: Any, ctx: Any) -> None:
    """Make ``span`` the current span of this (main) thread for the rest of its life.

    The token is dropped on purpose: the process's span stays the parent of whatever the
    program records on its main thread until the process ends.
    """
    from opentelemetry import context as otel_context

    otel_context.attach(trace.set_span_in_context(span, ctx))


def _excepthook_chain(previous: Any) -> Any:
    def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if (
                isinstance(exc, BaseException)
                and not isinstance(exc, SystemExit)
                and (_run or _program.watching())
                and called_by_the_interpreter(sys._getframe())
            ):
                record = ExceptionRecord(exc)
                note_failure(record)
                _program.note_failure(record)
        except Exception:  # noqa: BLE001
            pass
        previous(exc_type, exc, tb)

    excepthook._procscope_chain = True  # type: ignore[attr-defined]
    return excepthook


def watch_main_thread_exceptions() -> None:
    """For a process whose span ends at atexit: record an unhandled exception of main.

    Chained in front of the program's hook and left in place at uninstrument (it does
    nothing once the process's span has ended): taking it out could undo a hook that the
    program installed after ours.
    """
    if not getattr(sys.excepthook, "_procscope_chain", False):
        sys.excepthook = _excepthook_chain(sys.excepthook)


_atexit_registered = False


def end_at_exit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        # Registered after the SDK provider's own atexit hook, so it runs before it.
        atexit.register(_at_exit)
        _atexit_registered = True


def instrument(patches: Patches) -> None:
    patches.patch(os, "_exit", _make_exit)
