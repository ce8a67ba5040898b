"""asyncio tasks: ``BaseEventLoop.create_task``, which ``asyncio.create_task``,
``ensure_future``, ``gather``, ``TaskGroup.create_task`` (3.11+) and ``asyncio.run`` all
go through.

Context needs no help here (a task copies the context current at its creation). The span
is started before the task is created and made current for that moment only, so that the
task's copy of the context has it as parent of whatever the task records; a done
callback ends it. The coroutine is never wrapped: ``Task.get_coro()`` stays the user's.
A failed task's exception is read from the task without retrieving it (``Task.exception()``
would mark it retrieved and silence asyncio's "exception was never retrieved" report).
"""

from __future__ import annotations

import asyncio
import threading
import time
from asyncio import base_events
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from procscope.core import flight, shared_state
from procscope.core.guard import log_internal_error
from procscope.core.naming import NAME_ATTR, get_name

from ._patching import Patches
from ._runtime import (
    KIND,
    ROLE,
    SPANS_ALL,
    TASK_CANCELLED,
    TASK_FUNCTION,
    TASK_NAME,
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
from ._task_records import TASK
from ._threads import qualname

_names = shared_state.get().names
_time_ns = time.time_ns
_ident = threading.get_ident


def _unretrieved_exception(task: asyncio.Future[Any]) -> BaseException | None:
    """The task's exception, read without marking it retrieved."""
    if task.cancelled():
        return None
    exc = getattr(task, "_exception", None)
    return exc if isinstance(exc, BaseException) else None


_HOUSEKEEPING = frozenset(
    (
        "BaseEventLoop.shutdown_asyncgens",
        "BaseEventLoop.shutdown_default_executor",
        "shutdown_asyncgens",  # Python 3.10 has no co_qualname
        "shutdown_default_executor",
    )
)


def _asyncio_own(coro: Any) -> bool:
    """asyncio.run's own clean-up tasks are not the program's."""
    code = getattr(coro, "cr_code", None)
    return code is not None and getattr(code, "co_qualname", code.co_name) in _HOUSEKEEPING


def _coro_name(coro: Any) -> str:
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if code is not None:
        return str(getattr(code, "co_qualname", code.co_name))
    return qualname(coro)


def _attributes(task: Any, coro: Any) -> dict[str, Any]:
    attributes = thread_attributes()
    attributes[KIND] = "task"
    attributes[ROLE] = "run"
    attributes[TASK_NAME] = task.get_name()
    attributes[TASK_FUNCTION] = _coro_name(coro)
    return attributes


def _span_name(task: Any) -> str:
    return "task " + (get_name(task) or task.get_name())


def _make_create_task(original: Any) -> Any:
    def create_task(self: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
        if not runtime.active:
            return original(self, coro, *args, **kwargs)
        span = None
        token = None
        try:
            # runtime.spans first: in the default mode, no call at all.
            if runtime.spans == SPANS_ALL and every_thread_wanted() and not _asyncio_own(coro):
                given_context = kwargs.get("context") is not None
                parent: otel_context.Context | None = None
                if record_under(None):
                    # The name is known only once the task exists; set after.
                    span = start_span("task", {})
                    parent = trace.set_span_in_context(span)
                elif may_draw():  # (at rate 0 nothing draws: nothing to keep from it)
                    current = otel_context.get_current()
                    parent = unsampled_context(current)
                    if parent is current and not given_context:
                        # Already in an unsampled trace, which the task's copy of the
                        # context carries: attaching it again changed nothing.
                        parent = None
                if parent is None:
                    pass
                elif given_context:
                    # asyncio.run (3.11+) gives its main task a context of its own; the
                    # task's span is made current in that context, as it would be in the
                    # copy that a task without one gets.
                    kwargs["context"].run(otel_context.attach, parent)
                else:
                    token = otel_context.attach(parent)
        except Exception:  # noqa: BLE001
            log_internal_error()
        try:
            task = original(self, coro, *args, **kwargs)
        except BaseException as exc:
            if span is not None:
                end_with_error(span, exc)
                span.end()
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
        try:
            if span is not None:
                span.update_name(_span_name(task))
                span.set_attributes(_attributes(task, coro))
                task.add_done_callback(_SpanEnder(span))
            elif error_spans_wanted():
                task.add_done_callback(_ErrorWatcher(current_context(), now_ns(), coro))
        except Exception:  # noqa: BLE001
            log_internal_error()
        return task

    return create_task


class _SpanEnder:
    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def __call__(self, task: Any) -> None:
        try:
            # Named again at the end: asyncio.create_task(name=...) names the task only
            # after the loop made it (before 3.13), and a task may be renamed later.
            self.span.update_name(_span_name(task))
            self.span.set_attribute(TASK_NAME, task.get_name())
            exc = None
            if task.cancelled():
                self.span.set_attribute(TASK_CANCELLED, True)
            else:
                exc = _unretrieved_exception(task)
                if exc is not None:
                    end_with_error(self.span, exc)
                    flight.claim(self.span.get_span_context())  # (its trigger is below)
            self.span.end()
            if exc is not None:
                flight_trigger(exception_reason(f"task {task.get_name()}", exc),
                               self.span.get_span_context())
        except Exception:  # noqa: BLE001
            log_internal_error()


class _ErrorWatcher:
    """errors-only mode: a span, after the fact, only for a task that failed."""

    __slots__ = ("coro", "ctx", "started")

    def __init__(self, ctx: otel_context.Context, started: int, coro: Any) -> None:
        self.ctx = ctx
        self.started = started
        self.coro = coro

    def __call__(self, task: Any) -> None:
        try:
            exc = _unretrieved_exception(task)
            if exc is not None and runtime.active:
                attributes = _attributes(task, self.coro)
                error_span(_span_name(task), attributes, self.ctx, self.started, exc)
            elif flight.append is not None and runtime.active:
                _note_end(task, self.coro, self.started)
        except Exception:  # noqa: BLE001
            log_internal_error()
        self.coro = None


def _given_name(task: Any) -> str | None:
    """``get_name(task)``, without its two failed look-ups for asyncio's own Task class
    (no ``__dict__`` to read; an unnamed one has no name attribute): a generic attribute
    look-up with a default raises nothing there, and that class has no user hook."""
    if type(task) is not asyncio.Task:
        return get_name(task)
    name = getattr(task, NAME_ATTR, None)
    if name is None and getattr(_names, "data", _names):
        name = get_name(task)
    return name if type(name) is str else None


def _note_end(task: Any, coro: Any, started: int) -> None:
    """The flight record of an unsampled task's end: names only (``_task_records``),
    unless the program named the task with ``procscope.name()`` (rare), whose record
    carries the span's name and attributes made now."""
    if _given_name(task) is not None:
        flight.note(flight.EVENT, _span_name(task), _attributes(task, coro), started)
        return
    add = flight.append
    if add is not None:
        flight.count()
        add((_time_ns(), TASK.code, _ident(), task.get_name(), _coro_name(coro), started))


def instrument(patches: Patches) -> None:
    patches.patch(base_events.BaseEventLoop, "create_task", _make_create_task)
