"""What every part of the lifecycle instrumentor shares: the tracer, the live options, and
the few helpers that make, end and propagate lifecycle spans.

Everything here is read on each call (no caching of the level): ``procscope.configure()``
changes the level while the program runs, and the next thread or process must see it.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from procscope.core import flight, handoff, head_sampling, losses, shared_state
from procscope.core._exception_event import exception_fields
from procscope.core.guard import log_internal_error, logger
from procscope.core.settings import BadSettingError, resolve_one
from procscope.core.threadinfo import current_thread_name

# --- attribute names (docs/semantic-conventions.md, "Lifecycle instrumentor") --------------
KIND = "procscope.lifecycle.kind"
ROLE = "procscope.lifecycle.role"
ERROR_ONLY = "procscope.lifecycle.error_only"
# "parent" on a child's process span that its parent recorded for it (the child killed).
RECORDED_BY = "procscope.lifecycle.recorded_by"
PID = "process.pid"
PARENT_PID = "process.parent_pid"
COMMAND_ARGS = "process.command_args"
EXIT_CODE = "process.exit.code"
EXIT_SIGNAL = "procscope.process.exit.signal"
EXIT_REASON = "procscope.process.exit.reason"
# The exit reason of a pool worker that its own pool ended (Pool.terminate, __exit__,
# the pool's finalizer): an expected end, so not an error even though a signal ended it.
TERMINATED_BY_POOL = "terminated_by_pool"
PROCESS_NAME = "procscope.process.name"
START_METHOD = "procscope.process.start_method"
TARGET = "procscope.process.target"
PROCESS_DAEMON = "procscope.process.daemon"
THREAD_ID = "thread.id"
THREAD_NAME = "thread.name"
THREAD_DAEMON = "procscope.thread.daemon"
TASK_NAME = "procscope.task.name"
TASK_FUNCTION = "procscope.task.function"
TASK_CANCELLED = "procscope.task.cancelled"
POOL_KIND = "procscope.pool.kind"

# --- the spans option ----------------------------------------------------------------------
ENV_SPANS = "PROCSCOPE_LIFECYCLE_SPANS"
SPANS_ALL = "all"
SPANS_ERRORS = "errors"
# Every thread, task and pool task gets its span (issue 12: full recall means full). A
# span still costs about what a thread start+join does (docs/performance.md#recorder), so
# "errors", only those that fail, is there for programs that make threads or tasks by the
# hundred thousand. Process spans do not depend on this (see docs/lifecycle.md).
DEFAULT_SPANS = SPANS_ALL

# How long a child may spend flushing what it recorded before it exits (docs/lifecycle.md,
# "Exit and shutdown budgets"). Small on purpose: with the backend down, an exporter's own
# timeout (10 s for OTLP) made every child's exit wait 5 s. A flush cut short writes what
# is left to the hand-off spool (exit_flush_handed_off()), for a survivor to export; what
# even that cannot take is counted in exit_flush_abandoned(); one log line says both.
EXIT_FLUSH_MILLIS = 500
# The share of that budget kept for writing what is left to the hand-off spool.
SPOOL_SHARE = 0.2
# At full recall (the recorder's overflow policy "wait": a debugging run wants complete
# data) into the trace DB alone, the flush goes on past the budget for as long as it makes
# progress, up to PROGRESS_CAP_S in all, as the program's own shutdown does: a busy child's
# backlog is written rather than counted lost. "No progress" is a whole slice in which
# neither a record became a span nor a span was exported; a slice outlasts the DB's busy
# timeout (an export may wait that long for the write lock that another process holds
# while it writes). Another exporter (OTLP to a backend that may be down) keeps the
# budget: its leftovers go to the hand-off spool.
PROGRESS_SLICE_S = 6.0
PROGRESS_CAP_S = 30.0
_abandoned = [0]
_handed_off = [0]
_stuck: list[threading.Thread] = []


def exit_flush_abandoned() -> int:
    """Spans this process left unexported because its exit flush ran out of budget,
    and that could not be handed off either (see exit_flush_handed_off())."""
    return _abandoned[0]


def exit_flush_handed_off() -> int:
    """Spans this process's exit flush could not export in its budget and wrote to the
    hand-off spool (procscope.core.handoff) for a survivor to export."""
    return _handed_off[0]


def _queued_spans() -> int:
    return sum(_queued_by_stage())


def _queued_by_stage() -> tuple[int, int]:
    """(spans in the batch processors' queues and exports, records not yet made spans)."""
    queued = records = 0
    for processor in span_processors():
        batch = getattr(processor, "_batch_processor", None)
        queue = getattr(batch, "_queue", None)
        if queue is not None:
            queued += len(queue) + len(getattr(batch, "procscope_in_flight", None) or ())
        pending = getattr(processor, "pending", None)  # the recorder's records
        if callable(pending):
            records += int(pending())
    return queued, records


_propagator = TraceContextTextMapPropagator()
# The live settings object (never replaced): its attributes are read at each call.
_live = shared_state.settings()


def parse_spans(value: object) -> str:
    text = str(value).strip().lower()
    if text not in (SPANS_ALL, SPANS_ERRORS):
        raise BadSettingError("expected all or errors")
    return text


class Runtime:
    """The instrumentor's state while it is on (one per process: the instrumentor is a
    singleton). Plain attributes read without a lock, as the live settings are."""

    def __init__(self) -> None:
        self.tracer: Any = None
        self.provider: Any = None
        # The spans as records (procscope.core.recorded) when the provider has procscope's
        # recorder as its only processor and a parent-following sampler; else None, and
        # SDK spans are made on the calling thread.
        self.records: Any = None
        self.spans = DEFAULT_SPANS
        self.active = False

    def configure(self, tracer_provider: Any, spans: object) -> None:
        self.provider = tracer_provider
        self.tracer = trace.get_tracer(
            "procscope.instrumentation.lifecycle", tracer_provider=tracer_provider
        )
        self.records = _span_records(self.tracer, tracer_provider or trace.get_tracer_provider())
        self.spans = resolve_one("spans", ENV_SPANS, spans, parse_spans, DEFAULT_SPANS)
        self.active = True


def _span_records(tracer: Any, provider: Any) -> Any:
    from procscope.core.recorded import SpanRecords, records_allowed
    from procscope.core.recorder import recorder_of

    recorder = recorder_of(provider)
    if recorder is None or not records_allowed(tracer):
        return None
    try:
        return SpanRecords(tracer, recorder)
    except Exception:  # noqa: BLE001 -- not an SDK tracer we know: SDK spans, as before
        log_internal_error()
        return None


runtime = Runtime()


# --- what the level asks for ---------------------------------------------------------------


def process_spans_wanted() -> bool:
    """Process lifecycle spans: at full and minimal; never at messages_only/states_only."""
    return _live.level in ("full", "minimal")


def every_thread_wanted() -> bool:
    """A span for every thread and task (else only for those that fail)."""
    return runtime.spans == SPANS_ALL and _live.level == "full"


def error_spans_wanted() -> bool:
    """Spans for threads and tasks that end with an unhandled exception."""
    return _live.level in ("full", "minimal")


# --- spans -----------------------------------------------------------------------------------


def thread_attributes() -> dict[str, Any]:
    return {THREAD_ID: threading.get_native_id(), THREAD_NAME: current_thread_name()}


def this_process_attributes(
    kind: str, role: str, name: str, parent_pid: int | None = None
) -> dict[str, Any]:
    """The attributes of a span about the calling process itself (its run, its end)."""
    attributes = thread_attributes()
    attributes[KIND] = kind
    attributes[ROLE] = role
    attributes[PID] = os.getpid()
    attributes[PARENT_PID] = parent_pid or os.getppid()
    attributes[PROCESS_NAME] = name
    return attributes


def may_draw() -> bool:
    """Whether a new trace could be sampled now (a rate above 0, or tail mode)."""
    return _live.sample_rate > 0 or head_sampling.records_every_trace()


def record_under(ctx: otel_context.Context | None) -> bool:
    """should_record() for a span whose parent is ``ctx`` (None: the current context)."""
    if ctx is not None:
        if not ctx:  # an empty context: no span, no suppression, nothing to attach
            return head_sampling.should_record_root()
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            return bool(span_context.trace_flags.sampled)
        token = otel_context.attach(ctx)
        try:
            return head_sampling.should_record()
        finally:
            otel_context.detach(token)
    return head_sampling.should_record()


def unsampled_context(ctx: otel_context.Context | None = None) -> otel_context.Context:
    """A context whose current span is a non-recording, unsampled one.

    Given to children when this trace was not sampled, so that they do not draw again and
    record pieces of a trace whose parent does not exist.
    """
    base = ctx if ctx is not None else otel_context.get_current()
    current = trace.get_current_span(base).get_span_context()
    if current.is_valid:
        return base  # already carries the unsampled flag
    span_context = SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), base)


def start_span(
    name: str,
    attributes: dict[str, Any],
    ctx: otel_context.Context | None = None,
    start_time: int | None = None,
    span_id: int | None = None,
) -> Any:
    """A lifecycle span; ``span_id`` (honoured under procscope's recorder only) is the id
    to give it instead of a new one."""
    records = runtime.records
    if records is not None:
        span = records.start_span(name, context=ctx, start_time=start_time, span_id=span_id)
    else:
        span = runtime.tracer.start_span(name, context=ctx, start_time=start_time)
    # Set after the start, not passed to start_span: the SDK keeps only the attributes
    # that the sampler hands back, and a sampler that returns none would drop them all.
    if attributes:
        span.set_attributes(attributes)
    return span


class ExceptionRecord:
    """An exception as its span event will show it (type, message, stack text), taken when
    it is seen, for a span that ends later (the process's own, at exit).

    Keeping the exception itself would keep its traceback alive, and with it every frame
    of the failed call and every object those frames hold, for the rest of the process.
    """

    __slots__ = ("description", "event")

    def __init__(self, exc: BaseException) -> None:
        # (the same fields a cheap child records of its own end: procscope.core.cheap_child)
        self.event, self.description = exception_fields(exc)


def _str_or_placeholder(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 -- the program's __str__ is not ours to fail on
        return f"<unprintable {type(exc).__name__} object>"


def end_with_error(
    span: Any, exc: BaseException | ExceptionRecord | None, description: str | None = None
) -> None:
    """Mark ``span`` failed; record ``exc`` as an exception event when given."""
    if isinstance(exc, ExceptionRecord):
        span.add_event("exception", exc.event)
        description = description or exc.description
    elif exc is not None:
        span.record_exception(exc)
        description = description or f"{type(exc).__name__}: {exc}"
    span.set_status(Status(StatusCode.ERROR, description))


def process_span_id(ctx: Any) -> int:
    """The id of the ``process`` span of a child started under the spawn span current in
    ``ctx`` (0: none): drawn from the spawn span's random id by a fixed bijection, so that
    the child and its parent both know it. A parent that sees the child killed (SIGKILL:
    the child's own span is never exported) records it then, and what the child did
    export keeps a recorded parent."""
    spawn = trace.get_current_span(ctx).get_span_context()
    if not spawn.is_valid:
        return 0
    return ((spawn.span_id * 0x9E3779B97F4A7C15) ^ 0x5851F42D4C957F2D) & 0xFFFFFFFFFFFFFFFF or 1


def set_exit_status(
    span: Any, code: int | None, *, reason: str | None = None, expected: bool = False
) -> None:
    """Exit code or (negative, as multiprocessing and subprocess report it) signal.

    ``reason``: why the process ended (recorded as ``procscope.process.exit.reason``);
    with a reason, or ``expected``, a signal is recorded but the span is not an error.
    """
    if code is None:
        return
    if code < 0:
        span.set_attribute(EXIT_SIGNAL, -code)
        if reason is not None:
            span.set_attribute(EXIT_REASON, reason)
        elif not expected:
            span.set_status(Status(StatusCode.ERROR, f"killed by signal {-code}"))
    else:
        span.set_attribute(EXIT_CODE, code)
        if code != 0:
            span.set_status(Status(StatusCode.ERROR, f"exit code {code}"))


def flight_trigger(reason: str, span_context: Any = None, wait: float | None = None) -> None:
    """Write the flight recorder's window out (docs/flight-recorder.md), if it is on."""
    if flight.append is None:
        return
    try:
        flight.dump(reason, trigger=span_context, wait=wait)
    except Exception:  # noqa: BLE001
        log_internal_error()


def exception_reason(where: str, exc: BaseException | ExceptionRecord) -> str:
    """``exception in thread worker-1: ValueError: bad``: a dump's reason."""
    if isinstance(exc, ExceptionRecord):
        return f"exception in {where}: {exc.description}"
    return f"exception in {where}: {type(exc).__name__}: {_str_or_placeholder(exc)}"


def flight_error(name: str, where: str, exc: BaseException, start_time: int) -> None:
    """An unsampled thread or task failed: its failure into the ring, then a dump."""
    if flight.append is None:
        return
    record = ExceptionRecord(exc)
    flight.note(flight.ERROR, name, record.event, record.description)
    flight_trigger(exception_reason(where, record))


def error_span(
    name: str,
    attributes: dict[str, Any],
    ctx: otel_context.Context | None,
    start_time: int,
    exc: BaseException,
) -> None:
    """The span of a thread or task made after the fact because it failed."""
    if not record_under(ctx):
        flight_error(name, name, exc, start_time)
        return
    attributes[ERROR_ONLY] = True
    span = start_span(name, attributes, ctx, start_time)
    end_with_error(span, exc)
    flight.claim(span.get_span_context())  # (its trigger is below)
    span.end()
    flight_trigger(exception_reason(name, exc), span.get_span_context())


# The clock itself, not a function calling it: one Python frame less per thread and task.
now_ns = time.time_ns

_context_var = head_sampling.sdk_context_var()
# otel_context.get_current() in one C call where the SDK's runtime context allows it.
current_context: Any = _context_var.get if _context_var is not None else otel_context.get_current


# --- carrying context to other processes ---------------------------------------------------


def inject(ctx: otel_context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    if not carrier:
        return None
    ctx = _propagator.extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def current_provider() -> Any:
    return runtime.provider or trace.get_tracer_provider()


def span_processors(limit: int = 32) -> list[Any]:
    """Every span processor behind the provider: its own, and those that a wrapper (such
    as procscope's tail sampler) forwards to."""
    multi = getattr(current_provider(), "_active_span_processor", None)
    pending = list(getattr(multi, "_span_processors", ()) or ())
    found: list[Any] = []
    while pending and len(found) < limit:
        processor = pending.pop()
        found.append(processor)
        for name in ("_next", "_processor", "_span_processor"):
            downstream = getattr(processor, name, None)
            if downstream is not None and hasattr(downstream, "on_end"):
                pending.append(downstream)
        # procscope's recorder: the processors it delivers to.
        fan_out = getattr(processor, "downstream", None)
        if isinstance(fan_out, tuple):
            pending.extend(p for p in fan_out if hasattr(p, "on_end"))
    return found


def nothing_to_flush() -> bool:
    """True when the provider surely holds no span to export: its processors are all SDK
    batch processors, each with an empty queue and no export under way. Any other
    processor (what it holds is unknown) means a flush."""
    processors = span_processors()
    if not processors:
        return False
    for processor in processors:
        if type(processor).__name__ == "RecordingSpanProcessor":
            # procscope's recorder: its records not yet delivered, the batch in hand
            # included (its record sink stores a batch before it returns; its downstream
            # processors are in the list too).
            if processor.pending():
                return False
            continue
        batch = getattr(processor, "_batch_processor", None)
        queue = getattr(batch, "_queue", None)
        lock: Any = getattr(batch, "_export_lock", None)
        if queue is None or not hasattr(lock, "locked"):
            return False
        # The queue first: the worker empties it under the export lock, so an empty queue
        # and then a free lock mean that nothing is waiting and nothing is being sent.
        if len(queue) or lock.locked():
            return False
    return True


def flush(timeout_millis: int = EXIT_FLUSH_MILLIS) -> None:
    """Flush the provider within a time budget: the process is about to exit.

    On a helper thread, waited for at most the budget: the SDK's batch processor ignores
    the timeout it is given, and an exporter can block for ever in a forked child (a lock
    of a library, such as SQLite's, held by another thread of the parent at the moment of
    the fork). A process must never hang at exit because of procscope. Nothing is started
    when there is surely nothing to export (an unsampled child, the second of a child's
    two flushes): a thread start costs 0.1-0.2 ms in a freshly forked child.
    """
    force_flush = getattr(current_provider(), "force_flush", None)
    if force_flush is None:
        return
    try:
        if nothing_to_flush():
            return
    except Exception:  # noqa: BLE001 -- when in doubt, flush
        pass
    if _stuck and _stuck[-1].is_alive():
        # An earlier exit flush of this process (a child ends twice: its span, then
        # os._exit) is still stuck on the same export: do not spend the budget again.
        return
    patient = _waits_for_room()
    flush_millis = int(PROGRESS_CAP_S * 1000) if patient else timeout_millis
    try:
        helper = threading.Thread(
            target=force_flush, args=(flush_millis,), name="procscope-exit-flush", daemon=True
        )
        helper.start()
    except RuntimeError:  # no new threads at interpreter shutdown: flush here
        force_flush(timeout_millis)
        return
    helper.join(timeout_millis / 1000 * (1 - SPOOL_SHARE))
    if helper.is_alive() and patient:
        _wait_while_progress(helper)
    # The budget's last part is kept for writing what is left to the hand-off spool.
    deadline = time.monotonic() + timeout_millis / 1000 * SPOOL_SHARE
    if helper.is_alive():
        _stuck.append(helper)
        # Out of budget (an exporter waiting on a dead backend, a library lock held over
        # the fork): what is still queued, and the batch being sent, are written to the
        # hand-off spool for a survivor to export (local disk, within the budget's rest);
        # what cannot be is given up.
        left = _queued_spans()
        handed = _hand_off(deadline)
        lost = max(left - handed, 0)
        _abandoned[0] += lost
        _handed_off[0] += handed
        # Counted with the process's other losses, and sent at once to the DB owner (no
        # export of this process will carry them: it is about to exit).
        losses.count_lost(lost, losses.EXIT_FLUSH)
        losses.report_now()
        logger.info(
            "procscope: exit flush out of its %d ms budget; %d queued spans handed off "
            "to %s, %d dropped",
            timeout_millis,
            handed,
            handoff.directory(),
            lost,
        )


def _waits_for_room() -> bool:
    """True at full recall (the recorder's overflow policy is "wait") when every batch
    processor exports to the trace DB (local disk: slow at worst, never down)."""
    processors = span_processors()
    exporters = [
        getattr(getattr(p, "_batch_processor", None), "_exporter", None) for p in processors
    ]
    return (
        any(getattr(p, "overflow", None) == "wait" for p in processors)
        and all(
            type(e).__module__.startswith("procscope.exporters.tracedb")
            for e in exporters
            if e is not None
        )
        and any(e is not None for e in exporters)
    )


def _wait_while_progress(helper: threading.Thread) -> None:
    """Wait for the flush while what is queued keeps shrinking, up to the cap."""
    give_up = time.monotonic() + PROGRESS_CAP_S
    queued, records = _queued_by_stage()
    while helper.is_alive() and time.monotonic() < give_up:
        helper.join(PROGRESS_SLICE_S)
        now_queued, now_records = _queued_by_stage()
        # Progress at either stage: records made into spans, or spans exported (a record
        # made a span moves from one count to the other, so their sum can stand still).
        if now_queued >= queued and now_records >= records:
            return  # no progress in a whole slice: stalled
        queued, records = now_queued, now_records


def _hand_off(deadline: float) -> int:
    """Write what the batch processors still hold to the spool; returns how many spans."""
    handed = 0
    try:
        for exporter, spans in handoff.take_queued(span_processors()):
            handed += handoff.write(spans, handoff.exporter_key(exporter), deadline)
    except Exception:  # noqa: BLE001 -- the exit goes on; what was not written is lost
        log_internal_error()
    return handed


def scope_settings() -> Any:
    """The settings of procscope.setup() in this process (None when it was not used)."""
    return getattr(shared_state.get(), "scope_settings", None)
