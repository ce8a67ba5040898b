"""The hand-off spool: spans a process could not export before it exited, kept on local
disk for a survivor of the same program to export through its own exporters.

A child's exit flush has a small budget (lifecycle ``EXIT_FLUSH_MILLIS``). With a backend
down, what is still queued when the budget runs out is written here (no network; OTLP
protobuf, so every id, time, attribute, event, link, status and resource comes back as
it was) instead of being dropped. The top process (the one that called ``setup()``)
looks at the spool on its batch worker's schedule, at most every :data:`POLL_SECONDS`,
and every process looks at it when its batch processors shut down.

Layout: one directory per program (mode 0700), named at set-up in the top process and
passed to every child in ``PROCSCOPE_HANDOFF_DIR``; beside the trace DB
(``<db>.handoff``) when there is one, else a fresh ``procscope-handoff-*`` directory in
the temporary folder. A file ``<exporter key>.<pid>.<n>.spans`` holds length-prefixed
``ExportTraceServiceRequest`` messages for the exporter of that key. It is written under
a ``.tmp`` name and renamed when complete; a survivor claims a file by renaming it to
``.claimed-<its pid>`` (atomic: two survivors never both get one), exports it, then
deletes it, or renames it back when the export failed. A claim whose process is gone is
taken over. A file that does not decode is counted, moved to ``corrupt/`` and reported
once on procscope's logger.

What OTLP does not carry does not come back: counts of dropped attributes, events and
links (the spans come back with none dropped), and the trace flags (a span that was
exported was sampled; links come back sampled too).
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ._spooldir import made_private
from .forksafe import ForkSafeLock
from .guard import warn_once
from .threadinfo import current_process_name

ENV_DIR = "PROCSCOPE_HANDOFF_DIR"
# The top process's pid: the others export the spool only once it is gone.
ENV_OWNER = "PROCSCOPE_HANDOFF_OWNER"
POLL_SECONDS = 5.0
SUFFIX = ".spans"
CORRUPT_DIR = "corrupt"
# Encoded per chunk, so that a writer out of time stops between chunks, not mid-file.
_CHUNK = 256
_LENGTH = struct.Struct(">I")

_state: dict[str, Any] = {"dir": None, "top_pid": 0, "last_poll": 0.0}
_counts = {"handed_off": 0, "collected": 0, "corrupt": 0}
_serial = itertools.count(1)
# (fork-safe: held by a thread of the parent at the fork, a plain copy would keep a child
# that survives it from ever collecting the spool)
_collecting = ForkSafeLock()


def prepare(db_path: str | None) -> str | None:
    """Name the program's spool directory; called by ``setup()``.

    In the top process, where ``PROCSCOPE_HANDOFF_DIR`` is not set yet, derive it and
    publish it for every child; in a child, use the inherited one.
    """
    inherited = os.environ.get(ENV_DIR)
    if inherited:
        _state["dir"] = inherited
        return inherited
    # Only named here; made by the first process that writes to it (most runs never do,
    # and leave nothing behind).
    if db_path:
        path = os.path.abspath(db_path) + ".handoff"
    else:
        import tempfile  # (here: about 2 ms at every start-up, for the rare run with no DB)

        unique = f"{os.getuid()}-{os.getpid()}-{time.time_ns() % 10**12}"
        path = os.path.join(tempfile.gettempdir(), f"procscope-handoff-{unique}")
    os.environ[ENV_DIR] = path
    os.environ[ENV_OWNER] = str(os.getpid())
    _state["dir"] = path
    _state["top_pid"] = os.getpid()
    return path


def _private_directory() -> str | None:
    """The spool directory, made (mode 0700) if missing; None unless it is ours alone."""
    path = directory()
    return path if path and made_private(path) else None


def remove_if_empty() -> None:
    """At the top process's end: the spool directory removed when nothing is left in it
    (a flight recorder's mirror made it for a child, say). A fresh one in the temporary
    folder is the program's alone and would never be used again. One that still holds
    spans (a backend that stayed down) is left, to be exported by naming it
    (docs/lifecycle.md)."""
    path = directory()
    if path and is_top_process():
        try:
            os.rmdir(path)
        except OSError:
            pass


def directory() -> str | None:
    """The program's spool directory (it may not exist yet), or None."""
    return os.environ.get(ENV_DIR) or _state["dir"] or None


def is_top_process() -> bool:
    return _state["top_pid"] == os.getpid()


def survivor() -> bool:
    """Whether this process should export the spool as it shuts down: the top process
    does; another does only when the top process is gone (else its exit would wait on
    the backend for spans the top process will export anyway)."""
    if is_top_process():
        return True
    owner = os.environ.get(ENV_OWNER, "")
    return not owner.isdecimal() or not _alive(int(owner))


def counts() -> dict[str, int]:
    """This process's hand-off counters: spans written to the spool, spans exported from
    it, spool files set aside as undecodable."""
    return dict(_counts)


def exporter_key(exporter: Any) -> str:
    kind = type(exporter)
    return f"{kind.__module__}.{kind.__qualname__}".replace("/", "_")


# --- writing -----------------------------------------------------------------------------


def write(
    spans: Sequence[Any], key: str, deadline: float, origin: tuple[int, str] | None = None
) -> int:
    """Write ``spans`` (finished ReadableSpans) to the spool for the exporter ``key``,
    stopping at ``deadline`` (time.monotonic()). Returns how many were written; the rest
    are the caller's to count as lost. Never raises. ``origin``: the (pid, process name)
    they are stored under, when not this process's (a dead child's flight recording)."""
    if not spans:
        return 0
    folder = _private_directory()
    if not folder:
        return 0
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    except ImportError:
        return 0
    # The writer's pid and process name (hex: any text) travel in the file's name, for an
    # exporter that stores spans under the process that made them (export_from).
    pid, process_name = origin or (os.getpid(), _process_name())
    name = f"{key}.{pid}-{process_name.encode().hex()}.{next(_serial)}"
    temporary = os.path.join(folder, name + ".tmp")
    written = 0
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for start in range(0, len(spans), _CHUNK):
                if time.monotonic() >= deadline:
                    break
                chunk = spans[start : start + _CHUNK]
                message = encode_spans(chunk).SerializeToString()
                out.write(_LENGTH.pack(len(message)) + message)
                written += len(chunk)
        if written:
            os.rename(temporary, os.path.join(folder, name + SUFFIX))
        else:
            os.unlink(temporary)
    except Exception:  # noqa: BLE001 -- a full disk, a removed folder: the spans are lost
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return 0
    _counts["handed_off"] += written
    return written


def take_queued(processors: Iterable[Any]) -> list[tuple[Any, list[Any]]]:
    """Empty the queues of SDK batch processors (and the batch each was sending): the
    process is exiting and these spans go to the spool. Returns (exporter, spans) pairs."""
    taken = []
    for processor in processors:
        batch = getattr(processor, "_batch_processor", None)
        queue = getattr(batch, "_queue", None)
        if batch is None or queue is None:
            continue
        spans: list[Any] = list(getattr(batch, "procscope_in_flight", None) or ())
        while True:
            try:
                spans.append(queue.pop())  # oldest first; atomic against the worker
            except IndexError:
                break
        if spans:
            taken.append((batch._exporter, spans))
    return taken


# --- collecting --------------------------------------------------------------------------


def due() -> bool:
    """True at most every POLL_SECONDS, in the top process only (the batch worker asks)."""
    if not is_top_process():
        return False
    now = time.monotonic()
    if now - _state["last_poll"] < POLL_SECONDS:
        return False
    _state["last_poll"] = now
    return True


def collect(exporter: Any, deadline: float | None = None) -> int:
    """Export the spool's files meant for ``exporter``'s kind through it; returns the
    number of spans exported. Never raises."""
    folder = directory()
    if not folder:
        return 0
    if not _collecting.acquire(blocking=False):
        return 0  # another thread of this process is at it
    try:
        return _collect(folder, exporter, deadline)
    except Exception:  # noqa: BLE001 -- the spool must never disturb the program
        return 0
    finally:
        _collecting.release()


def _collect(folder: str, exporter: Any, deadline: float | None) -> int:
    key = exporter_key(exporter) + "."
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    exported = 0
    for name in names:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if not name.startswith(key):
            continue
        original = _original_name(name)
        if original is None:
            continue
        claimed = os.path.join(folder, f"{original}.claimed-{os.getpid()}")
        try:
            os.rename(os.path.join(folder, name), claimed)
        except OSError:
            continue  # another survivor got it first
        exported += _export_file(folder, claimed, original, exporter)
    return exported


def _original_name(name: str) -> str | None:
    """The ``.spans`` name of a file to claim: a spool file, or one claimed by a process
    that is gone; None for anything else."""
    if name.endswith(SUFFIX):
        return name
    head, sep, pid = name.rpartition(".claimed-")
    if not sep or not pid.isdecimal() or _alive(int(pid)):
        return None
    return head


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _process_name() -> str:
    try:
        return current_process_name()
    except Exception:  # noqa: BLE001
        return ""


def _origin(original: str, exporter: Any) -> tuple[int, str] | None:
    """(pid, process name) of the process that wrote ``original``, from its name."""
    rest = original[len(exporter_key(exporter)) + 1 :]
    segment = rest.split(".", 1)[0]
    pid, _, name = segment.partition("-")
    try:
        return int(pid), bytes.fromhex(name).decode()
    except ValueError:
        return None


def _export_file(folder: str, claimed: str, original: str, exporter: Any) -> int:
    try:
        with open(claimed, "rb") as source:
            spans = decode(source.read())
    except Exception:  # noqa: BLE001 -- undecodable: counted, set aside, never retried
        _counts["corrupt"] += 1
        aside = os.path.join(folder, CORRUPT_DIR)
        warn_once(
            "handoff-corrupt",
            "procscope: a hand-off spool file could not be read; moved to %s",
            aside,
        )
        try:
            os.makedirs(aside, mode=0o700, exist_ok=True)
            os.rename(claimed, os.path.join(aside, original))
        except OSError:
            pass
        return 0
    from opentelemetry.sdk.trace.export import SpanExportResult

    export_from: Any = getattr(exporter, "export_from", None)
    origin = _origin(original, exporter) if export_from is not None else None
    try:
        result = exporter.export(spans) if origin is None else export_from(spans, *origin)
    except Exception:  # noqa: BLE001 -- as a failed export
        result = None
    if result is not SpanExportResult.SUCCESS:
        try:
            os.rename(claimed, os.path.join(folder, original))  # for the next look
        except OSError:
            pass
        return 0
    try:
        os.unlink(claimed)
    except OSError:
        pass
    _counts["collected"] += len(spans)
    return len(spans)


# --- decoding ----------------------------------------------------------------------------


def decode(data: bytes) -> list[Any]:
    """The spans of a spool file, as ReadableSpans; raises ValueError when it is not one."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans: list[Any] = []
    offset = 0
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise ValueError("truncated spool file")
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + size > len(data):
            raise ValueError("truncated spool file")
        request = ExportTraceServiceRequest.FromString(data[offset : offset + size])
        offset += size
        spans.extend(_spans_of(request))
    if not spans:
        raise ValueError("empty spool file")
    return spans


def _spans_of(request: Any) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    spans = []
    for resource_spans in request.resource_spans:
        resource = Resource(
            _attributes(resource_spans.resource.attributes), resource_spans.schema_url
        )
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            instrumentation = InstrumentationScope(
                scope.name,
                scope.version or None,
                scope_spans.schema_url or None,
                _attributes(scope.attributes) or None,
            )
            for span in scope_spans.spans:
                # The span's own context is local; its flags (bits 8-9) say whether
                # its parent was remote. OTLP carries no trace flags: what was
                # exported was sampled.
                context = _context(span.trace_id, span.span_id, 0, span.trace_state)
                parent = (
                    _context(span.trace_id, span.parent_span_id, span.flags, span.trace_state)
                    if span.parent_span_id
                    else None
                )
                status_code = (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR)[span.status.code]
                spans.append(
                    ReadableSpan(
                        name=span.name,
                        context=context,
                        parent=parent,
                        resource=resource,
                        attributes=_attributes(span.attributes),
                        events=[
                            Event(e.name, _attributes(e.attributes), e.time_unix_nano)
                            for e in span.events
                        ],
                        links=[
                            Link(
                                _context(link.trace_id, link.span_id, link.flags, link.trace_state),
                                _attributes(link.attributes),
                            )
                            for link in span.links
                        ],
                        kind=SpanKind(max(span.kind - 1, 0)),
                        status=Status(status_code, span.status.message or None),
                        start_time=span.start_time_unix_nano,
                        end_time=span.end_time_unix_nano,
                        instrumentation_scope=instrumentation,
                    )
                )
    return spans


# OTLP span and link flags, bits 8-9: whether the parent (the linked span) is remote.
_REMOTE_KNOWN = 0x100
_REMOTE = 0x200


def _context(trace_id: bytes, span_id: bytes, flags: int, trace_state: str) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    return SpanContext(
        int.from_bytes(trace_id, "big"),
        int.from_bytes(span_id, "big"),
        is_remote=bool(flags & _REMOTE_KNOWN and flags & _REMOTE),
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([trace_state]) if trace_state else TraceState(),
    )


def _attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which is None:
        return None
    return getattr(value, which)
