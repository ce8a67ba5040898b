"""Cheap children's runs made into spans, by the top process (``procscope.core.cheap_child``).

A cheap child that ended plainly left one record in the program's spool directory. The
top process makes it into the span the child's full path would have recorded: the same
name, attributes, parent, times and exit status, the same sampler decision and
attributes, under the child's pid, with the child's resource (the top process's own,
whose variables the child shared, with the process attributes of the child). The span
goes to the exporters behind the top process's recorder, as a dead child's flight
recording does: the trace DB stores it under the child's pid.

When: after the top process reaps such a child (on a helper thread, which its shutdown
waits for); for the others (a grandchild, a child started by a shell, one never waited
for) on the top process's export schedule, and at its end.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk import resources as semconv
from opentelemetry.sdk.resources import ProcessResourceDetector, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from procscope.core import cheap_child, handoff
from procscope.core._flight_mirror import _exporters
from procscope.core.guard import handle_internal_errors
from procscope.core.runs import RUN_COMMAND_KEY, RUN_ID_KEY

from ._runtime import (
    KIND,
    PARENT_PID,
    PID,
    PROCESS_NAME,
    ROLE,
    START_METHOD,
    THREAD_ID,
    THREAD_NAME,
    set_exit_status,
)

SCOPE = InstrumentationScope("procscope.instrumentation.lifecycle")
PROCESS_NAME_OF_CHILD = "MainProcess"  # (a cheap child has never imported multiprocessing)
_SERVICE_INSTANCE_ID = "service.instance.id"


def collect(pid: int | None = None) -> int:
    """Make the records of ended cheap children (of ``pid`` only, when given) into spans
    and export them; returns how many. Only in the top process, which allowed them."""
    return make_and_export(take(pid))


def collect_if_changed() -> int:
    """:func:`collect`, on the top process's export schedule (at most every few
    seconds: a grandchild, a child never waited for, while the program runs), only when
    the spool directory changed since the last look (a ``stat``, which opens no file:
    this runs on an exporting thread, see :func:`collect_later`)."""
    folder = handoff.directory()
    if not folder or not handoff.is_top_process():
        return 0
    try:
        changed = os.stat(folder).st_mtime_ns != _seen[0]
    except OSError:
        return 0
    return collect() if changed else 0


# The spool directory's modification time when no record was left in it.
_seen = [0]


def collect_later(pid: int) -> None:
    """:func:`collect` of one reaped child: its record taken here, on the program's
    thread (in ``wait()``), its span made and exported on a helper thread that a shutdown
    waits for (the program's thread does not wait for the trace DB).

    Only what opens no file runs on the helper thread (no file read, no module imported
    there: this module imports what it needs when it is imported, by the program's
    thread): a file it opened could get a number the program has just closed (0, 1 or
    2, while it starts a child with other standard streams), and closing it then would
    close the program's file instead."""
    records = take(pid)
    if not records:
        return
    from procscope.core import _flight_spans

    def work() -> None:
        with handle_internal_errors():
            make_and_export(records)

    _flight_spans.run_helper(work, _flight_spans.RECOVER_THREAD)


def take(pid: int | None = None) -> list[dict[str, Any]]:
    """The records left by ended cheap children (of ``pid`` only, when given), each taken
    once (claimed by an atomic rename, read, removed), with what their resource needs
    from files (the owner's name) read now."""
    folder = handoff.directory()
    if not folder or not handoff.is_top_process():
        return []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    prefix = f"{cheap_child.PREFIX}{pid}-" if pid is not None else cheap_child.PREFIX
    records = []
    others_left = False
    for name in names:
        if not (name.startswith(prefix) and name.endswith(cheap_child.SUFFIX)):
            others_left = others_left or name.startswith(cheap_child.PREFIX)
            continue
        path = os.path.join(folder, name)
        claimed = f"{path}.claimed-{os.getpid()}"
        try:
            os.rename(path, claimed)  # (atomic: a record is made into a span once)
        except OSError:
            continue
        record = cheap_child.read(claimed)
        try:
            os.unlink(claimed)
        except OSError:
            pass
        if record is not None:
            if semconv.PROCESS_OWNER in _this_process():
                record["owner"] = _user_name(record["uid"])
            records.append(record)
    if not others_left:
        try:
            _seen[0] = os.stat(folder).st_mtime_ns
        except OSError:
            pass
    return records


def make_and_export(records: list[dict[str, Any]]) -> int:
    """The records' spans, exported; returns how many."""
    spans = []
    for record in records:
        span = span_of(record)
        if span is not None:
            spans.append((record["pid"], span))
    _export(spans)
    return len(spans)


_detected: list[Any] = []


def _this_process() -> Any:
    """What OpenTelemetry's process detector finds for this process (once: with psutil
    installed it reads files of /proc, which only the program's thread may open)."""
    if not _detected:
        _detected.append(ProcessResourceDetector().detect().attributes)
    return _detected[0]


def _export(spans: list[tuple[int, ReadableSpan]]) -> None:
    if not spans:
        return
    provider = trace.get_tracer_provider()
    for exporter in _exporters(getattr(provider, "_active_span_processor", None)):
        export_from = getattr(exporter, "export_from", None)
        for pid, span in spans:
            with handle_internal_errors():
                if export_from is not None:
                    export_from([span], pid, PROCESS_NAME_OF_CHILD)
                else:
                    exporter.export([span])


def span_of(record: dict[str, Any]) -> ReadableSpan | None:
    """The span a cheap child's full path would have made of its run (None: not sampled
    under this process's sampler, or a record it cannot read)."""
    parent_ids = cheap_child.parse_traceparent(record.get("traceparent") or "")
    if parent_ids is None:
        return None
    trace_id, parent_id, sampled = parent_ids
    header = record.get("tracestate")
    trace_state = TraceState.from_header([header]) if header else TraceState()
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(trace_id, parent_id, True, flags, trace_state)
    provider = trace.get_tracer_provider()
    name = "process " + record["name"]
    attributes: dict[str, Any] = {}
    sampler = getattr(provider, "sampler", None)
    if sampler is not None:
        ctx = trace.set_span_in_context(NonRecordingSpan(parent))
        result = sampler.should_sample(ctx, trace_id, name, SpanKind.INTERNAL)
        if not result.decision.is_sampled():
            return None
        attributes.update(result.attributes or {})
        trace_state = result.trace_state if result.trace_state is not None else trace_state
    elif not sampled:
        return None
    attributes.update(_run_attributes(record))
    ending = _Ending(attributes)
    events: tuple[Event, ...] = ()
    if record.get("failure"):  # (what end_with_error records of an ExceptionRecord)
        event, description = record["failure"]
        events = (Event("exception", event, int(record["end_ns"])),)
        ending.set_status(Status(StatusCode.ERROR, description))
    if record.get("signal"):
        set_exit_status(ending, -int(record["signal"]))
    else:
        set_exit_status(ending, record.get("code"))
    id_generator = getattr(provider, "id_generator", None)
    span_id = id_generator.generate_span_id() if id_generator is not None else _random_span_id()
    context = SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED), trace_state)
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=child_resource(getattr(provider, "resource", None), record),
        attributes=attributes,
        events=events,
        kind=SpanKind.INTERNAL,
        instrumentation_scope=SCOPE,
        status=ending.status,
        start_time=int(record["start_ns"]),
        end_time=int(record["end_ns"]),
    )


def _random_span_id() -> int:
    return int.from_bytes(os.urandom(8), "big") or 1


def _run_attributes(record: dict[str, Any]) -> dict[str, Any]:
    """What ``this_process_attributes("subprocess", "run", name)`` and the start method
    give in the child, in the same order."""
    return {
        THREAD_ID: record["thread_id"],
        THREAD_NAME: "MainThread",  # (threading was never imported: not renamed)
        KIND: "subprocess",
        ROLE: "run",
        PID: record["pid"],
        PARENT_PID: record["ppid"],
        PROCESS_NAME: record["name"],
        START_METHOD: "subprocess",
    }


class _Ending:
    """What ``set_exit_status`` sets on a span, kept for a ReadableSpan."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.status = Status()

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_status(self, status: Status) -> None:
        self.status = status


# --- the child's resource --------------------------------------------------------------------


def child_resource(base: Resource | None, record: dict[str, Any]) -> Resource:
    """``base`` (this process's resource, made from the variables the child shared) with
    the child's own process attributes, as OpenTelemetry's process detector reads them,
    its own service instance id, and no run command (only the run's first process has
    one)."""
    attributes = dict(base.attributes) if base is not None else {}
    mine = _this_process()
    theirs = _process_attributes(record, mine)
    for key, value in theirs.items():
        # Only where the detector set it (OTEL_RESOURCE_ATTRIBUTES may name one itself).
        if key not in attributes or attributes[key] == mine.get(key):
            attributes[key] = value
    if _SERVICE_INSTANCE_ID in attributes and (
        f"{_SERVICE_INSTANCE_ID}=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    ):
        attributes[_SERVICE_INSTANCE_ID] = str(uuid.uuid4())  # (one per process)
    attributes.pop(RUN_COMMAND_KEY, None)
    if record.get("run_id"):
        attributes[RUN_ID_KEY] = record["run_id"]
    return Resource(attributes, getattr(base, "schema_url", None))


def _process_attributes(record: dict[str, Any], mine: Any) -> dict[str, Any]:
    """OpenTelemetry's ``ProcessResourceDetector().detect()`` had it run in the child."""
    info = tuple(record["version_info"])
    final = info[3] == "final" and not info[4]
    executable = record["executable"]
    argv = list(record["orig_argv"])
    found: dict[str, Any] = {
        semconv.PROCESS_RUNTIME_DESCRIPTION: record["version"],
        semconv.PROCESS_RUNTIME_NAME: record["implementation"],
        semconv.PROCESS_RUNTIME_VERSION: ".".join(map(str, info[:3] if final else info)),
        semconv.PROCESS_PID: record["pid"],
        semconv.PROCESS_EXECUTABLE_NAME: os.path.basename(executable),
        semconv.PROCESS_EXECUTABLE_PATH: executable,
        semconv.PROCESS_COMMAND: argv[0] if argv else "",
    }
    if semconv.PROCESS_COMMAND_LINE in mine:
        found[semconv.PROCESS_COMMAND_LINE] = " ".join(argv)
        found[semconv.PROCESS_COMMAND_ARGS] = argv
    found[semconv.PROCESS_PARENT_PID] = record["ppid"]
    if semconv.PROCESS_OWNER in mine:
        found[semconv.PROCESS_OWNER] = record.get("owner") or _user_name(record["uid"])
    return found


def _user_name(uid: int) -> str:
    """psutil's ``Process.username()`` for a process of ``uid`` (what the detector records
    where psutil is installed)."""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)
