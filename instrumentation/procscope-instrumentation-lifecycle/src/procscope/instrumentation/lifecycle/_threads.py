"""Threads (``threading.Thread``, ``Timer``) and ``ThreadPoolExecutor`` calls.

``Thread.start`` captures the starter's context; ``Thread._bootstrap_inner`` (which runs
first in the new thread, for every subclass, whatever ``run`` it overrides) attaches it and
makes the thread's span. The unhandled exception is seen through the thread's own
``_invoke_excepthook`` (shadowed on the instance for the thread's life), so that the
program's ``threading.excepthook`` still runs exactly as before.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from procscope.core import flight
from procscope.core.guard import log_internal_error
from procscope.core.naming import get_name

from ._patching import Patches
from ._runtime import (
    KIND,
    POOL_KIND,
    ROLE,
    SPANS_ALL,
    TASK_FUNCTION,
    THREAD_DAEMON,
    THREAD_ID,
    THREAD_NAME,
    current_context,
    end_with_error,
    error_span,
    error_spans_wanted,
    every_thread_wanted,
    exception_reason,
    flight_trigger,
    may_draw,
    now_ns,
    record_under,
    runtime,
    start_span,
    thread_attributes,
    unsampled_context,
)

_OWN_MODULES = ("opentelemetry.", "procscope.")
_HOUSEKEEPING_MODULES = ("multiprocessing.", "concurrent.futures.")


def qualname(func: Any) -> str:
    try:
        inner = getattr(func, "func", None)  # functools.partial
        target = inner if inner is not None and callable(inner) else func
        module = getattr(target, "__module__", None) or ""
        name = getattr(target, "__qualname__", None) or type(target).__qualname__
        return f"{module}.{name}" if module else str(name)
    except Exception:  # noqa: BLE001 -- a hostile callable must not stop the thread
        return "?"


# The starter's context for each thread between its start() and its first instruction,
# keyed by the Thread object. Not in the thread's own __dict__: a key added to an
# instance dict (and popped again) turns the class's shared-key dicts into ordinary
# ones, which costs thousands of instructions per thread start here (callgrind).
# Plain dict operations are atomic under the GIL.
_pending: dict[threading.Thread, tuple[otel_context.Context, bool]] = {}

# What start() does for a target's module: True = context and (maybe) a span, False =
# context only, None = nothing. Cached, because two str.startswith calls per thread start
# cost more than the rest of start() here; module names are few, and the cache is bounded.
_treatment_of_module: dict[str | None, bool | None] = {}
_MAX_MODULES_CACHED = 2_048


def _treatment(module: str | None) -> bool | None:
    text = module if isinstance(module, str) else ""
    if text.startswith(_HOUSEKEEPING_MODULES):
        # multiprocessing's and concurrent.futures' helper threads (pool maintenance,
        # result handlers, executor workers): context, no span; what they run has its own
        # spans (pool_task, spawn).
        treatment: bool | None = False
    elif text.startswith(_OWN_MODULES):
        # The SDK's own worker threads (a batch processor re-started after fork) and
        # ours are not the program's: no span, no context.
        treatment = None
    else:
        treatment = True
    if (module is None or type(module) is str) and len(_treatment_of_module) < _MAX_MODULES_CACHED:
        _treatment_of_module[module] = treatment
    return treatment


def _make_start(original: Any) -> Any:
    def start(self: threading.Thread) -> None:
        if not runtime.active:
            return original(self)  # type: ignore[no-any-return]
        try:
            # An attribute read, never getattr() or self.__dict__: the read is specialized
            # by CPython (3.11+), while getattr() takes the generic path, and merely
            # reading an instance's __dict__ makes a real dict of its inline values.
            module = self._target.__module__  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 -- no target (run() overridden), a callable
            module = None  # without __module__, or one whose attribute access raises
        try:
            try:
                treatment = _treatment_of_module[module]
            except (KeyError, TypeError):  # TypeError: an unhashable __module__
                treatment = _treatment(module)
            if treatment is not None:
                _pending[self] = (current_context(), treatment)
        except Exception:  # noqa: BLE001
            log_internal_error()
        try:
            return original(self)  # type: ignore[no-any-return]
        except BaseException:
            _pending.pop(self, None)  # never started (can't start new thread, started twice)
            raise

    return start


def forget_pending() -> None:
    """In a fork child: threads that other threads of the parent were starting or
    running, which do not exist here."""
    _pending.clear()
    _watched.clear()


def _thread_span_name(thread: threading.Thread) -> str:
    return "thread " + (get_name(thread) or thread.name)


def _own_attributes(thread: threading.Thread) -> dict[str, Any]:
    # Not threading.current_thread(): the thread is not registered yet when this runs,
    # and asking would register a _DummyThread in its place.
    return {
        THREAD_ID: threading.get_native_id(),
        THREAD_NAME: thread.name,
        KIND: "thread",
        ROLE: "run",
        THREAD_DAEMON: thread.daemon,
    }


# Threads running in the default mode whose unhandled exception is wanted: thread ->
# None, then the exception once threading's excepthook has seen it. Found by the
# threading.excepthook chained in front of the program's (below), so that a thread
# costs two dict operations rather than a closure shadowing its _invoke_excepthook.
_watched: dict[threading.Thread, BaseException | None] = {}
# [the chained hook], or [None] while it is not installed: one list read per thread.
_chained_hook: list[Any] = [None]


def _chain_threading_excepthook(previous: Any) -> Any:
    def excepthook(args: Any) -> None:
        try:
            thread = args.thread
            exc = args.exc_value
            if thread in _watched and exc is not None and not isinstance(exc, SystemExit):
                _watched[thread] = exc
        except Exception:  # noqa: BLE001 -- the program's hook must run whatever happens
            pass
        previous(args)

    excepthook._procscope_chain = True  # type: ignore[attr-defined]
    excepthook._procscope_previous = previous  # type: ignore[attr-defined]
    return excepthook


def _install_threading_excepthook() -> None:
    if not getattr(threading.excepthook, "_procscope_chain", False):
        threading.excepthook = _chain_threading_excepthook(threading.excepthook)
    _chained_hook[:] = [threading.excepthook]


def _remove_threading_excepthook() -> None:
    """Put the program's hook back, unless it chained its own in front of ours since:
    then ours stays, harmless (it only notes exceptions of threads it watches)."""
    hook = threading.excepthook
    if getattr(hook, "_procscope_chain", False):
        threading.excepthook = hook._procscope_previous  # type: ignore[attr-defined]
    _chained_hook[:] = [None]


def _make_bootstrap_inner(original: Any) -> Any:
    def _bootstrap_inner(self: threading.Thread) -> None:
        captured = _pending.pop(self, None)
        if captured is None or not runtime.active:
            return original(self)  # type: ignore[no-any-return]
        ctx, spans_allowed = captured
        if spans_allowed and runtime.spans == SPANS_ALL and every_thread_wanted():
            try:
                sampled = record_under(ctx)
                if not sampled and may_draw():
                    # Not sampled: its children must not draw again and record pieces of
                    # a trace whose parent does not exist. (At rate 0 nothing draws.)
                    ctx = unsampled_context(ctx)
            except Exception:  # noqa: BLE001
                log_internal_error()
                sampled = False
            if sampled:
                return _run_with_span(original, self, ctx)
        # No span of its own (not sampled, or spans only for failures): this runs in the
        # new thread before its starter's start() can return, so it is on the critical
        # path of every thread start. No detach at the end: the thread's contextvars
        # context ends with it.
        failure: list[BaseException] | None = None
        started = 0
        try:
            if ctx:  # an empty context (nothing current at start) is what a thread has
                otel_context.attach(ctx)
            if spans_allowed:
                started = now_ns()
                if threading.excepthook is _chained_hook[0]:
                    _watched[self] = None
                else:  # the program replaced threading.excepthook: watch this thread alone
                    failure = []
                    _watch_failure(self, failure)
        except Exception:  # noqa: BLE001
            log_internal_error()
        try:
            return original(self)  # type: ignore[no-any-return]
        finally:
            if spans_allowed:
                try:
                    exc = _watched.pop(self, None) or (failure[0] if failure else None)
                    if failure:
                        # The Thread object (and its shadowed _invoke_excepthook, which
                        # holds this list) may live on: the exception must not.
                        failure.clear()
                    if flight.append is not None:
                        # The thread's end (its name with it: threading has forgotten
                        # the thread when a dump names the threads of its records).
                        flight.note(flight.EVENT, _thread_span_name(self),
                                    _own_attributes(self), started)
                    if exc is not None and error_spans_wanted():
                        attributes = _own_attributes(self)
                        error_span(_thread_span_name(self), attributes, ctx, started, exc)
                except Exception:  # noqa: BLE001
                    log_internal_error()

    return _bootstrap_inner


def _watch_failure(thread: threading.Thread, failure: list[BaseException]) -> None:
    """Collect the thread's unhandled exception into ``failure``.

    Through the thread's own ``_invoke_excepthook`` (shadowed on the instance), so that
    ``threading.excepthook``, whoever set it, still runs exactly as before."""
    invoke = getattr(thread, "_invoke_excepthook", None)
    if invoke is None:
        return

    def _invoke_excepthook(thread: threading.Thread) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, SystemExit):
            failure.append(exc)
        invoke(thread)

    thread._invoke_excepthook = _invoke_excepthook  # type: ignore[attr-defined]


def _run_with_span(original: Any, thread: threading.Thread, ctx: otel_context.Context) -> None:
    """``_bootstrap_inner`` with a span for the thread's life (spans=all, sampled)."""
    span = None
    token = None
    failure: list[BaseException] = []
    started = now_ns()
    try:
        span = start_span(_thread_span_name(thread), _own_attributes(thread), ctx)
        ctx = trace.set_span_in_context(span, ctx)
        token = otel_context.attach(ctx)
        _watch_failure(thread, failure)
    except Exception:  # noqa: BLE001
        log_internal_error()
    try:
        return original(thread)  # type: ignore[no-any-return]
    finally:
        try:
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                if failure:
                    end_with_error(span, failure[0])
                    flight.claim(span.get_span_context())  # (its trigger is below)
                span.end()
                if flight.append is not None:
                    # Its name, for a dump that holds its unsampled messages (see
                    # flight.SampledEventKind): not a span of its own there.
                    flight.note(flight.SAMPLED_EVENT, _thread_span_name(thread),
                                _own_attributes(thread), started)
                if failure:
                    flight_trigger(exception_reason(f"thread {thread.name}", failure[0]),
                                   span.get_span_context())
        except Exception:  # noqa: BLE001
            log_internal_error()
        failure.clear()  # held by the thread's shadowed _invoke_excepthook: see above


class _ContextCall:
    """A ``ThreadPoolExecutor`` call run in the submitter's context, with its span."""

    __slots__ = ("ctx", "fn")

    def __init__(self, fn: Any, ctx: otel_context.Context) -> None:
        self.fn = fn
        self.ctx = ctx

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        # self positional-only: the submitted call may take a keyword named self.
        return run_pool_call(self.fn, self.ctx, "thread_pool_executor", args, kwargs)


def run_pool_call(
    fn: Any, ctx: otel_context.Context | None, pool_kind: str, args: Any, kwargs: Any
) -> Any:
    """Run one submitted pool call under ``ctx``, with a span as the options ask."""
    span = None
    token = None
    started = 0
    try:
        if every_thread_wanted():
            if record_under(ctx):
                span = start_span("pool_task " + qualname(fn), _pool_attributes(fn, pool_kind), ctx)
                ctx = trace.set_span_in_context(span, ctx)
            elif may_draw():  # (at rate 0 nothing draws: nothing to keep from it)
                ctx = unsampled_context(ctx)
        started = now_ns()
        if ctx is not None:
            token = otel_context.attach(ctx)
    except Exception:  # noqa: BLE001
        log_internal_error()
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        try:
            if span is not None:
                end_with_error(span, exc)
            elif error_spans_wanted() and runtime.active:
                error_span(
                    "pool_task " + qualname(fn), _pool_attributes(fn, pool_kind), ctx, started, exc
                )
        except Exception:  # noqa: BLE001
            log_internal_error()
        raise
    finally:
        try:
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                span.end()
        except Exception:  # noqa: BLE001
            log_internal_error()
    return result


def _pool_attributes(fn: Any, pool_kind: str) -> dict[str, Any]:
    attributes = thread_attributes()
    attributes[KIND] = "pool_task"
    attributes[ROLE] = "run"
    attributes[POOL_KIND] = pool_kind
    attributes[TASK_FUNCTION] = qualname(fn)
    return attributes


def _make_submit(original: Any) -> Any:
    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if runtime.active:
            try:
                # OpenTelemetry's own calls (the SDK detects resources on a pool, in an
                # at-fork hook of every fork child) and ours are not the program's: no
                # span, as for their threads. Spans made there, inside a fork hook, ended
                # in span processors the fork had not yet reset (issue 14).
                module = getattr(fn, "__module__", None)
                if not (type(module) is str and module.startswith(_OWN_MODULES)):
                    fn = _ContextCall(fn, otel_context.get_current())
            except Exception:  # noqa: BLE001
                log_internal_error()
        return original(self, fn, *args, **kwargs)

    return submit


def uninstrument() -> None:
    _remove_threading_excepthook()


def instrument(patches: Patches) -> None:
    _install_threading_excepthook()
    patches.patch(threading.Thread, "start", _make_start)
    patches.patch(threading.Thread, "_bootstrap_inner", _make_bootstrap_inner)
    patches.patch(ThreadPoolExecutor, "submit", _make_submit)
