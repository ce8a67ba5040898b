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

from ._common.guard import log_internal_error
from ._common.naming import get_name
from ._patching import Patches
from ._runtime import (
    KIND,
    POOL_KIND,
    ROLE,
    TASK_FUNCTION,
    THREAD_DAEMON,
    THREAD_ID,
    THREAD_NAME,
    end_with_error,
    error_span,
    error_spans_wanted,
    every_thread_wanted,
    now_ns,
    record_under,
    runtime,
    start_span,
    thread_attributes,
    unsampled_context,
)

_CTX = "_procscope_context"
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


def _make_start(original: Any) -> Any:
    def start(self: threading.Thread) -> None:
        if runtime.active:
            try:
                target = self.__dict__.get("_target")
                module = getattr(target, "__module__", None) or ""
                # The SDK's own worker threads (a batch processor re-started after fork)
                # are not the program's: no span, no context.
                if module.startswith(_HOUSEKEEPING_MODULES):
                    # multiprocessing's and concurrent.futures' helper threads (pool
                    # maintenance, result handlers, executor workers): context, no span;
                    # what they run has its own spans (pool_task, spawn).
                    self.__dict__[_CTX] = (otel_context.get_current(), False)
                elif not module.startswith(_OWN_MODULES):
                    self.__dict__[_CTX] = (otel_context.get_current(), True)
            except Exception:  # noqa: BLE001
                log_internal_error()
        return original(self)  # type: ignore[no-any-return]

    return start


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


def _make_bootstrap_inner(original: Any) -> Any:
    def _bootstrap_inner(self: threading.Thread) -> None:
        captured = self.__dict__.pop(_CTX, None)
        if captured is None or not runtime.active:
            return original(self)  # type: ignore[no-any-return]
        ctx, spans_allowed = captured
        span = None
        token = None
        failure: list[BaseException] = []
        try:
            if spans_allowed and every_thread_wanted():
                if record_under(ctx):
                    attributes = _own_attributes(self)
                    span = start_span(_thread_span_name(self), attributes, ctx)
                    ctx = trace.set_span_in_context(span, ctx)
                else:
                    ctx = unsampled_context(ctx)
            started = now_ns()
            token = otel_context.attach(ctx)
            invoke = self.__dict__.get("_invoke_excepthook")
            if invoke is not None:

                def _invoke_excepthook(thread: threading.Thread) -> None:
                    exc = sys.exc_info()[1]
                    if exc is not None and not isinstance(exc, SystemExit):
                        failure.append(exc)
                    invoke(thread)

                self._invoke_excepthook = _invoke_excepthook  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            log_internal_error()
        try:
            return original(self)  # type: ignore[no-any-return]
        finally:
            try:
                if token is not None:
                    otel_context.detach(token)
                if span is not None:
                    if failure:
                        end_with_error(span, failure[0])
                    span.end()
                elif failure and spans_allowed and error_spans_wanted():
                    attributes = _own_attributes(self)
                    error_span(_thread_span_name(self), attributes, ctx, started, failure[0])
            except Exception:  # noqa: BLE001
                log_internal_error()

    return _bootstrap_inner


class _ContextCall:
    """A ``ThreadPoolExecutor`` call run in the submitter's context, with its span."""

    __slots__ = ("ctx", "fn")

    def __init__(self, fn: Any, ctx: otel_context.Context) -> None:
        self.fn = fn
        self.ctx = ctx

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
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
            else:
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
                fn = _ContextCall(fn, otel_context.get_current())
            except Exception:  # noqa: BLE001
                log_internal_error()
        return original(self, fn, *args, **kwargs)

    return submit


def instrument(patches: Patches) -> None:
    patches.patch(threading.Thread, "start", _make_start)
    patches.patch(threading.Thread, "_bootstrap_inner", _make_bootstrap_inner)
    patches.patch(ThreadPoolExecutor, "submit", _make_submit)
