"""multiprocessing processes (fork, spawn, forkserver), their pools, and ``os.fork``.

Parent side, ``BaseProcess.start``: a ``spawn`` span, and a :class:`~._child.Launch` put
in the Process object's ``__dict__``. With fork the child simply has it; with spawn and
forkserver the Process object is pickled to the child, and unpickling the Launch sets
procscope up there (see _child.py) before the child's ``_bootstrap`` runs.

Child side, ``BaseProcess._bootstrap`` (runs first in every child, whatever the start
method): the child's ``process`` span, parented on the spawn span; ended with the exit
code that ``_bootstrap`` returns, and flushed (fork and forkserver children then leave by
``os._exit``, skipping atexit).

Parent again, ``Popen.poll`` of multiprocessing's popen classes (behind ``join``,
``is_alive``, ``exitcode``, a pool's maintenance and multiprocessing's own clean-up): an
``exit`` span with the exit code or signal, once per child. That is what records a child
killed by SIGKILL, which could not record its own end.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from procscope.core import _flight_mirror, _flight_signal, _flight_stage, _flight_triggers, flight
from procscope.core.guard import log_internal_error
from procscope.core.naming import get_name
from procscope.core.patched import call_as
from procscope.core.post_import import when_imported

from . import _ending, _sigwatch
from ._child import Launch, PoolCall
from ._patching import Patches
from ._runtime import (
    KIND,
    PARENT_PID,
    PID,
    PROCESS_DAEMON,
    PROCESS_NAME,
    RECORDED_BY,
    ROLE,
    START_METHOD,
    TARGET,
    TERMINATED_BY_POOL,
    end_with_error,
    flight_trigger,
    flush,
    inject,
    process_span_id,
    process_spans_wanted,
    record_under,
    runtime,
    scope_settings,
    set_exit_status,
    span_processors,
    start_span,
    this_process_attributes,
    thread_attributes,
    unsampled_context,
)
from ._threads import forget_pending, qualname

_LAUNCH = "_procscope_launch"
_REAP = "_procscope_reap"

# Set while multiprocessing itself forks a child: os.fork then only forks.
_local = threading.local()


class ReapInfo:
    """What the parent needs to record a child's end when it reaps it."""

    __slots__ = ("ctx", "kind", "method", "name", "reason", "started_ns")

    def __init__(self, ctx: Any, name: str, method: str, kind: str) -> None:
        self.ctx = ctx
        self.name = name
        self.method = method
        self.kind = kind
        self.started_ns = time.time_ns()
        # Set by the parent just before it terminates the child on purpose (a pool).
        self.reason: str | None = None


def record_reap(info: ReapInfo, child_pid: int | None, code: int | None) -> None:
    """The ``exit`` span: an instant, when the parent learnt how the child ended."""
    if child_pid is not None and (code is None or code < 0 or info.method == "os.fork"):
        # Its marker for ``procscope dump``, which it could not remove itself (a signal;
        # ``os._exit``, how a bare fork child usually ends).
        _flight_signal.forget_child(child_pid)
    if code is not None and code < 0 and flight.append is not None and runtime.active:
        # A child killed by a signal (SIGKILL, the OOM killer) wrote nothing itself: what
        # its ring mirrored to disk is made into spans here, and this process's own
        # window is written out with it (docs/flight-recorder.md).
        reason = info.reason if code == -signal.SIGTERM else None
        if reason is None:
            _flight_child_killed(info.name, child_pid, -code)
    elif (code is not None and child_pid is not None and flight.append is not None
          and runtime.active and _flight_mirror.left_by(child_pid)):
        # It ended while the dump of its end was still being made, which its exit cut
        # short: it left its mirror for this process to make the recording from
        # (_ending.end_mirror).
        _flight_child_cut_off(info.name, child_pid, code)
    if (child_pid is not None and flight.append is not None and runtime.active
            and _flight_stage.left_by(child_pid)):
        # It ended before the spans of a recording it had staged in the trace DB were
        # all stored: made from the staged row here (_flight_stage).
        _flight_child_staged(child_pid)
    if info.ctx is None or not runtime.active or not process_spans_wanted():
        return
    attributes = thread_attributes()
    attributes[KIND] = info.kind
    attributes[ROLE] = "reap"
    attributes[PROCESS_NAME] = info.name
    attributes[START_METHOD] = info.method
    attributes[PARENT_PID] = os.getpid()
    if child_pid is not None:
        attributes[PID] = child_pid
    span = start_span("exit " + info.name, attributes, info.ctx)
    # The mark explains only the signal its pool sent; any other end is the child's own.
    reason = info.reason if code == -signal.SIGTERM else None
    set_exit_status(span, code, reason=reason)
    span.end()
    if code is not None and code < 0 and code != -signal.SIGTERM and info.kind == "process":
        _stand_in_for_killed(info, child_pid, code)


def _stand_in_for_killed(info: ReapInfo, child_pid: int | None, code: int) -> None:
    """The ``process`` span of a child killed by a signal other than SIGTERM (which the
    child handles and records itself): it never ended its own, so the parent records it,
    under the id the child gave it (process_span_id), from the child's start to now. What
    the child exported before it died then has its parent in the trace DB."""
    span_id = process_span_id(info.ctx)
    if not span_id or runtime.records is None:
        return
    attributes: dict[str, Any] = {KIND: "process", ROLE: "run", PROCESS_NAME: info.name,
                                  PARENT_PID: os.getpid(), START_METHOD: info.method,
                                  RECORDED_BY: "parent"}
    if child_pid is not None:
        attributes[PID] = child_pid
    span = start_span("process " + info.name, attributes, info.ctx, info.started_ns, span_id)
    set_exit_status(span, code)
    span.end()


def _flight_child_killed(name: str, child_pid: int | None, signum: int) -> None:
    from ._ending import signal_name

    what = f"child {name} ({child_pid}) killed by {signal_name(signum)}"
    if child_pid is not None:
        try:
            _flight_mirror.recover_later(child_pid, what, name)
        except Exception:  # noqa: BLE001
            log_internal_error()
    flight_trigger(what)


def _flight_child_cut_off(name: str, child_pid: int, code: int) -> None:
    what = f"child {name} ({child_pid}) exit code {code}: its recording, cut short"
    try:
        _flight_mirror.recover_later(child_pid, what, name)
    except Exception:  # noqa: BLE001
        log_internal_error()


def _flight_child_staged(child_pid: int) -> None:
    try:
        _flight_mirror.store_staged_later(child_pid)
    except Exception:  # noqa: BLE001
        log_internal_error()


def start_method_of(proc: Any) -> str:
    method = getattr(type(proc), "_start_method", None)
    if method:
        return str(method)
    from multiprocessing import context

    default = context._default_context
    return str(default.get_start_method(allow_none=True) or default._default_context._name)  # type: ignore[attr-defined]


def _target_name(proc: Any) -> str:
    target = proc.__dict__.get("_target")
    if target is not None:
        return qualname(target)
    return type(proc).__module__ + "." + type(proc).__qualname__


def spawn_context(name: str, attributes: dict[str, Any]) -> tuple[Any, Any]:
    """(span or None, context to give the child) for a process about to start."""
    if process_spans_wanted():
        if record_under(None):
            span = start_span("spawn " + name, attributes)
            return span, trace.set_span_in_context(span)
        return None, unsampled_context()
    # messages_only / states_only: no lifecycle spans, the context still travels.
    ctx = otel_context.get_current()
    if not trace.get_current_span(ctx).get_span_context().is_valid and not record_under(None):
        ctx = unsampled_context(ctx)
    return None, ctx


# --- multiprocessing.Process ---------------------------------------------------------------


def _make_start(original: Any) -> Any:
    def start(self: Any) -> None:
        if not runtime.active:
            return original(self)  # type: ignore[no-any-return]
        span = None
        info = None
        name = "process"
        try:
            name = get_name(self) or self.name
            method = start_method_of(self)
            attributes = thread_attributes()
            attributes[KIND] = "process"
            attributes[ROLE] = "spawn"
            attributes[PROCESS_NAME] = name
            attributes[START_METHOD] = method
            attributes[TARGET] = _target_name(self)
            attributes[PROCESS_DAEMON] = bool(self.daemon)
            attributes[PARENT_PID] = os.getpid()
            span, ctx = spawn_context(name, attributes)
            self.__dict__[_LAUNCH] = Launch(
                inject(ctx), scope_settings(), runtime.spans, method, name, _target_name(self)
            )
            info = ReapInfo(ctx if span is not None else None, name, method, "process")
        except Exception:  # noqa: BLE001
            log_internal_error()
        _local.in_start = True
        # A fork child's marker for ``procscope dump`` is written by its mirror's thread,
        # off its start (_flight_signal.defer_fork_marker).
        _flight_signal.defer_fork_marker(True)
        try:
            original(self)
        except BaseException as exc:
            if span is not None:
                end_with_error(span, exc)
                span.end()
            elif flight.append is not None:  # (unsampled: no span, the recorder's trigger)
                _flight_triggers.operation_failed("spawn " + name, exc)
            raise
        finally:
            _local.in_start = False
            _flight_signal.defer_fork_marker(False)
            self.__dict__.pop(_LAUNCH, None)  # the child has it; the parent keeps nothing
        try:
            if span is not None:
                span.set_attribute(PID, self.pid)
                span.end()
            popen = self.__dict__.get("_popen")
            # (An unsampled child is reaped too when the flight recorder is on: its death
            # by a signal is a trigger.)
            wanted = info is not None and (info.ctx is not None or flight.append is not None)
            if wanted and popen is not None:
                popen.__dict__[_REAP] = info
        except Exception:  # noqa: BLE001
            log_internal_error()
        return None

    return start


def _make_bootstrap(original: Any) -> Any:
    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        launch = self.__dict__.pop(_LAUNCH, None)
        if launch is None or not runtime.active:
            return original(self, *args, **kwargs)
        token = None
        try:
            _local.in_start = False
            ctx = launch.context()
            _ending.flight_child_start()
            if process_spans_wanted() and record_under(ctx):
                # The parent is the process that started it (a forkserver child's OS
                # parent is the fork server, which is not what anyone asked for).
                attributes = this_process_attributes(
                    "process", "run", launch.name, self.__dict__.get("_parent_pid")
                )
                attributes[START_METHOD] = launch.method
                attributes[TARGET] = launch.target
                span = _ending.begin_run(
                    "process " + launch.name,
                    attributes,
                    ctx,
                    pool_worker=launch.target == POOL_WORKER_TARGET,
                    span_id=process_span_id(ctx),
                )
                ctx = trace.set_span_in_context(span, ctx)
            if ctx is not None:
                token = otel_context.attach(ctx)
            run = self.run

            def run_and_watch() -> None:
                try:
                    run()
                except BaseException as exc:
                    if not isinstance(exc, SystemExit):
                        _ending.note_failure(exc)
                    else:  # (sys.exit(n): a non-zero n makes a recording at the end too)
                        flight.hold_targets()
                    raise

            # On the instance, in the child only: whatever run() the class defines.
            self.run = run_and_watch
        except Exception:  # noqa: BLE001
            log_internal_error()
        # A child, whose parent (a pool's terminate(), say) waits for it to die.
        _ending.watch_sigterm_in_child()
        code = None
        try:
            code = original(self, *args, **kwargs)
            return code
        finally:
            try:
                self.__dict__.pop("run", None)
                if not _ending.finish_run(code):
                    # No process span (messages_only, states_only, not sampled): still
                    # flush what the child recorded, before fork and forkserver children
                    # _exit (and its flight recorder's dump, if it ended badly).
                    _ending.flight_child_end(code)
                    flush()
                    _ending.end_mirror()
                _flight_signal.process_ended()
                if token is not None:
                    otel_context.detach(token)
            except Exception:  # noqa: BLE001
                log_internal_error()

    return _bootstrap


def _make_poll(original: Any) -> Any:
    def poll(self: Any, *args: Any, **kwargs: Any) -> Any:
        code = original(self, *args, **kwargs)
        if code is not None and _REAP in self.__dict__:
            try:
                info = self.__dict__.pop(_REAP, None)  # atomic: recorded once
                if info is not None:
                    record_reap(info, getattr(self, "pid", None), code)
            except Exception:  # noqa: BLE001
                log_internal_error()
        return code

    return poll


# --- pools: workers that their own pool terminates ------------------------------------------

POOL_WORKER_TARGET = "multiprocessing.pool.worker"


def _mark_terminated_by_pool(workers: Any) -> None:
    for worker in list(workers):
        # Reap (through exitcode) the workers already dead first: whatever ended them,
        # it was not this pool, and their exit span must say so.
        if getattr(worker, "exitcode", 0) is not None:
            continue
        popen = getattr(worker, "_popen", None)
        info = popen.__dict__.get(_REAP) if popen is not None else None
        if info is not None:
            info.reason = TERMINATED_BY_POOL


def _make_terminate_pool(original: Any) -> Any:
    # Pool._terminate_pool (a classmethod) is what Pool.terminate, Pool.__exit__ and the
    # pool's finalizer (garbage collection, interpreter exit) all run; it SIGTERMs the
    # workers still alive. Marking them before it runs lets the reap record say why.
    function = original.__func__

    def _terminate_pool(
        cls: Any, taskqueue: Any, inqueue: Any, outqueue: Any, pool: Any, *args: Any, **kwargs: Any
    ) -> Any:
        if runtime.active:
            try:
                _mark_terminated_by_pool(pool)
            except Exception:  # noqa: BLE001
                log_internal_error()
        return function(cls, taskqueue, inqueue, outqueue, pool, *args, **kwargs)

    return classmethod(_terminate_pool)


# --- pools: each submitted call --------------------------------------------------------------


def _wrap_call(fn: Any, pool_kind: str) -> Any:
    if not runtime.active:
        return fn
    try:
        return PoolCall(fn, inject(), pool_kind)
    except Exception:  # noqa: BLE001
        log_internal_error()
        return fn


def _make_pool_method(original: Any) -> Any:
    # apply_async, _map_async, imap, imap_unordered: the function is the first argument.
    def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, _wrap_call(func, "multiprocessing.pool"), *args, **kwargs)

    return method


def _make_executor_submit(original: Any) -> Any:
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return original(self, _wrap_call(fn, "process_pool_executor"), *args, **kwargs)

    return submit


# --- os.fork -----------------------------------------------------------------------------------

_forked: dict[int, ReapInfo] = {}


def _make_fork(original: Any) -> Any:
    if sys.version_info >= (3, 12):
        # os.fork warns (DeprecationWarning, multi-threaded) about the frame that called
        # it: make that the program's (or multiprocessing's) frame, as plainly.
        def call_fork() -> int:
            return call_as(sys._getframe(2), original)  # type: ignore[no-any-return]
    else:

        def call_fork() -> int:
            return original()  # type: ignore[no-any-return]

    def fork() -> int:
        if (
            not runtime.active
            or getattr(_local, "in_start", False)
            # multiprocessing's own forks (popen_fork, the fork server serving a child):
            # those children are recorded as Processes, by start and _bootstrap.
            or str(sys._getframe(1).f_globals.get("__name__", "")).startswith("multiprocessing.")
        ):
            return call_fork()
        span = None
        ctx = None
        try:
            attributes = thread_attributes()
            attributes[KIND] = "process"
            attributes[ROLE] = "spawn"
            attributes[PROCESS_NAME] = "os.fork"
            attributes[START_METHOD] = "os.fork"
            attributes[PARENT_PID] = os.getpid()
            span, ctx = spawn_context("os.fork", attributes)
        except Exception:  # noqa: BLE001
            log_internal_error()
        try:
            child_pid = call_fork()
        except BaseException as exc:
            if span is not None:
                end_with_error(span, exc)
                span.end()
            raise
        try:
            if child_pid == 0:
                _in_fork_child(ctx)
            else:
                if span is not None:
                    span.set_attribute(PID, child_pid)
                    span.end()
                # Reaped by os.waitpid, sampled or not: its death by a signal writes the
                # flight recorder out, and its dump marker goes (record_reap).
                _forked[child_pid] = ReapInfo(ctx if span is not None else None, "os.fork",
                                              "os.fork", "process")  # fmt: skip
        except Exception:  # noqa: BLE001
            log_internal_error()
        return child_pid  # type: ignore[no-any-return]

    return fork


def _in_fork_child(ctx: Any) -> None:
    _forked.clear()
    _ending.flight_child_start(mirror=False)
    if ctx is None:
        return
    if process_spans_wanted() and record_under(ctx):
        attributes = this_process_attributes("process", "run", "os.fork")
        attributes[START_METHOD] = "os.fork"
        span = _ending.begin_run("process os.fork", attributes, ctx, mirror=False)
        _ending.attach_as_main_context(span, ctx)
        _ending.end_at_exit()
    else:
        otel_context.attach(ctx)
    # No SIGTERM watch (_sigwatch) here: an os.fork child goes on with the program's own
    # code, which has no watch either, and the watch's thread and wakeup pipe would be a
    # thread and two fds the plain child does not have (threading's and os's own tests
    # count them). multiprocessing children, which their pool terminates, keep it.


def _make_waitpid(original: Any) -> Any:
    def waitpid(pid: int, options: int, /) -> Any:
        result = original(pid, options)
        if _forked:
            try:
                child_pid, status = result
                if child_pid in _forked and not os.WIFSTOPPED(status):
                    info = _forked.pop(child_pid, None)
                    if info is not None:
                        record_reap(info, child_pid, os.waitstatus_to_exitcode(status))
            except Exception:  # noqa: BLE001
                log_internal_error()
        return result

    return waitpid


def _after_fork_in_child() -> None:
    # Whatever this process was doing belongs to the parent: its own span, its children.
    _ending.forget_inherited()
    _forked.clear()
    forget_pending()
    _sigwatch.forget_after_fork()
    _unblock_sigterm()
    # The SDK has given its processors new locks already (its hook ran first); these
    # are the parent's old ones, copied, which nothing here uses any more.
    _resume_exports()


# SIGTERM is held back while a child is forked, until the fork hooks have run in it. A
# child inherits its parent's Python SIGTERM handler (procscope's flush); run before the
# SDK's batch processor has emptied its inherited queue (an at-fork hook), that flush
# would export the parent's queued spans a second time from the child. A pool's
# terminate() SIGTERMs workers that were forked a moment ago, so this happens.
_fork_mask = threading.local()


# While a child is forked, no batch export may be under way in another thread: that
# thread would hold the exporter's locks, and the SQLite library's own, in the child too,
# where nobody would ever release them, and the child's flush at exit would wait for ever.
# So the export lock of each SDK batch processor is taken around the fork (as the logging
# module does with its handlers' locks) -- but only when it is free: a fork never waits on
# an export (an export to an endpoint that is down can take the exporter's whole timeout,
# and it held every fork for up to 5 s). When an export is under way, the child is forked
# anyway: its batch processor and exporters reinitialise their own locks after the fork,
# and whatever library lock stays held there can only cost the child its exit flush's
# budget (_runtime.EXIT_FLUSH_MILLIS), never a hang.
_held_export_locks = threading.local()


def _export_locks() -> list[Any]:
    locks: list[Any] = []
    for processor in span_processors():
        inner = getattr(processor, "_batch_processor", None)
        lock = getattr(inner, "_export_lock", None)
        if lock is not None and hasattr(lock, "acquire"):
            locks.append(lock)
    return locks


def _quiesce_exports() -> None:
    taken = []
    try:
        for lock in _export_locks():
            if lock.acquire(blocking=False):
                taken.append(lock)
    except Exception:  # noqa: BLE001 -- fork must go ahead whatever happens here
        pass
    _held_export_locks.locks = taken


def _resume_exports() -> None:
    taken = getattr(_held_export_locks, "locks", None) or []
    _held_export_locks.locks = []
    for lock in taken:
        try:
            lock.release()
        except RuntimeError:
            pass


def _before_fork() -> None:
    if not runtime.active:
        return
    _quiesce_exports()
    _block_sigterm()


def _after_fork_in_parent() -> None:
    _unblock_sigterm()
    _resume_exports()


def _block_sigterm() -> None:
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _fork_mask.was_blocked = signal.SIGTERM in old
        _fork_mask.held = True
    except (AttributeError, OSError, ValueError):
        pass


def _unblock_sigterm() -> None:
    if not getattr(_fork_mask, "held", False):
        return
    _fork_mask.held = False
    if not _fork_mask.was_blocked:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        except (AttributeError, OSError, ValueError):
            pass


_at_fork_registered = False

# Imported once by the fork server when it starts, so that each forkserver child (forked
# from it) does not import OpenTelemetry and procscope again before setting up: ~115 ms
# per child here. With them, what the pipeline builder registered with procscope.core
# names (the plugin alone: none). ImportError is ignored by the fork server.
FORKSERVER_PRELOAD = ("procscope.instrumentation.lifecycle._child",)
_preloaded: list[str] = []


def _add_forkserver_preload() -> None:
    from multiprocessing import forkserver

    from procscope.core import child

    preload = getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None)
    if not isinstance(preload, list):
        return
    for module in (*FORKSERVER_PRELOAD, *child.preload_modules()):
        if module not in preload:
            preload.append(module)
            _preloaded.append(module)


# The hooks waiting for the program to import multiprocessing or ProcessPoolExecutor's
# module (procscope.core.post_import), cancelled at uninstrument().
_cancel_hooks: list[Any] = []


def uninstrument() -> None:
    while _cancel_hooks:
        _cancel_hooks.pop()()
    if "multiprocessing.forkserver" not in sys.modules:
        return
    from multiprocessing import forkserver

    preload = getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None)
    while _preloaded:
        module = _preloaded.pop()
        if isinstance(preload, list) and module in preload:
            preload.remove(module)


def _instrument_multiprocessing(patches: Patches) -> None:
    # (run once multiprocessing is imported: the program's first import of it, or now)
    from multiprocessing import pool as mp_pool
    from multiprocessing import popen_fork, popen_forkserver, process

    patches.patch(process.BaseProcess, "start", _make_start)
    patches.patch(process.BaseProcess, "_bootstrap", _make_bootstrap)
    patches.patch(popen_fork.Popen, "poll", _make_poll)
    patches.patch(popen_forkserver.Popen, "poll", _make_poll)
    for name in ("apply_async", "_map_async", "imap", "imap_unordered"):
        patches.patch(mp_pool.Pool, name, _make_pool_method)
    patches.patch(mp_pool.Pool, "_terminate_pool", _make_terminate_pool)
    _add_forkserver_preload()


def instrument(patches: Patches) -> None:
    global _at_fork_registered
    patches.patch(os, "fork", _make_fork)
    patches.patch(os, "waitpid", _make_waitpid)
    # multiprocessing (about 8 ms to import, which most programs never do) is patched when
    # the program imports it, inside that import, so no process of it is started unpatched.
    _cancel_hooks.append(when_imported(
        "multiprocessing", lambda _module: _instrument_multiprocessing(patches)))
    _cancel_hooks.append(when_imported(
        "concurrent.futures.process",
        lambda module: patches.patch(module.ProcessPoolExecutor, "submit",
                                     _make_executor_submit)))
    if not _at_fork_registered and hasattr(os, "register_at_fork"):
        # Registered after the SDK's batch processors (setup() makes them before it
        # instruments): after-in-child hooks run in registration order, so the inherited
        # queues are already emptied when SIGTERM is let through again.
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_after_fork_in_parent,
            after_in_child=_after_fork_in_child,
        )
        _at_fork_registered = True
