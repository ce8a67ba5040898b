"""A child's flight recorder ring, mirrored to disk so that it survives SIGKILL.

A process killed by SIGKILL (or the OOM killer) runs no code of ours: its ring dies with
it. So in a child process the ring is also copied, every :data:`INTERVAL` seconds, by a
thread of ours (``procscope-flight-mirror``), into files of the program's hand-off
directory (``procscope.core.handoff``): ``flight-<pid>.rec`` and, once that file holds
half the memory cap, ``flight-<pid>.rec.old`` (the one before). Each write is one
length-prefixed ``marshal`` chunk of records already made into span values (names,
attributes with content scrubbed, times), appended with one ``write``: a reader sees
whole chunks only. At most :data:`BATCH` records a tick are copied (the newest): a child
busier than that loses the older ones of the tick, counted as overwritten.

When the parent learns that the child died by a signal, :func:`recover` reads the files
and writes their records, as spans under the child's pid and name, to the hand-off
spool, from which the top process exports them (within ``handoff.POLL_SECONDS``, or at
its shutdown). A child that ends otherwise has its files removed.
"""

from __future__ import annotations

import marshal
import os
import struct
import threading
import time
from typing import Any

from . import flight, handoff
from .flight import F_KIND, F_SEQ, F_THREAD

INTERVAL = 0.1
BATCH = 2_000
_LENGTH = struct.Struct(">I")
_state: dict[str, Any] = {"thread": None, "pid": 0, "stop": False}


def _path(pid: int) -> str | None:
    folder = handoff._private_directory()
    return os.path.join(folder, f"flight-{pid}.rec") if folder else None


def start() -> None:
    """Start mirroring this process's ring (a child's), once per process."""
    if flight.append is None or _state["pid"] == os.getpid():
        return
    _state["pid"] = os.getpid()
    _state["stop"] = False
    thread = threading.Thread(target=_run, name="procscope-flight-mirror", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        return
    _state["thread"] = thread
    flight.mirrored = True


def after_fork_in_child() -> None:
    _state["pid"] = 0
    _state["thread"] = None
    flight.mirrored = False


def stop() -> None:
    """Stop mirroring and remove this process's files (an end that dumped or was fine)."""
    _state["stop"] = True
    flight.mirrored = False
    forget(os.getpid())


def forget(pid: int) -> None:
    path = _path(pid)
    if path:
        for name in (path, path + ".old"):
            try:
                os.unlink(name)
            except OSError:
                pass


def _plain(record: tuple[Any, ...], names: dict[int, str]) -> tuple[Any, ...] | None:
    made = record[F_KIND].span(record)
    if made is None:
        return None
    name, kind, start, end, attributes, events, error = made
    thread = record[F_THREAD]
    return (name, int(kind.value), start, end, attributes, tuple(events or ()), error, thread,
            names.get(thread) or f"thread-{thread}")


def _run() -> None:
    from ._flight_spans import _thread_names

    pid = os.getpid()
    path = _path(pid)
    if not path:
        return
    last_seq = -1
    cap = (flight.settings() or (0, flight.DEFAULT_MEMORY))[1] // 2
    while not _state["stop"] and _state["pid"] == pid:
        time.sleep(INTERVAL)
        ring = flight._ring
        if ring is None:
            return
        records = list(ring.records)  # (one C call: no append runs meanwhile)
        fresh = [r for r in records[-BATCH:] if r[F_SEQ] > last_seq]
        if not fresh:
            continue
        last_seq = fresh[-1][F_SEQ]
        try:
            names = _thread_names(fresh)
            chunk = marshal.dumps([p for p in (_plain(r, names) for r in fresh) if p])
            _append(path, _LENGTH.pack(len(chunk)) + chunk, cap)
        except Exception:  # noqa: BLE001 -- a value marshal refuses, a full disk: skip it
            continue


def _append(path: str, data: bytes, cap: int) -> None:
    try:
        if os.path.getsize(path) > cap:
            os.replace(path, path + ".old")
    except OSError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(pid: int) -> list[tuple[Any, ...]]:
    """The records a process mirrored (older file first), whole chunks only."""
    path = _path(pid)
    found: list[tuple[Any, ...]] = []
    if not path:
        return found
    for name in (path + ".old", path):
        try:
            with open(name, "rb") as source:
                data = source.read()
        except OSError:
            continue
        at = 0
        while at + 4 <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
            if at + 4 + size > len(data):
                break
            try:
                found.extend(marshal.loads(data[at + 4 : at + 4 + size]))
            except (ValueError, EOFError, TypeError):
                break
            at += 4 + size
    return found


class _Recovered(flight.FlightKind):
    """A record read back from a dead child's mirror (already span values)."""

    name = "recovered"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        from opentelemetry.trace import SpanKind

        name, kind, start, end, attributes, events, error, _thread, _name = record[4]
        return (name, SpanKind(kind), start, end, dict(attributes), list(events), error)


_RECOVERED = _Recovered()


def recover(pid: int, reason: str, process_name: str = "", window: float | None = None) -> int:
    """Make a dead child's mirrored records into a dump under its pid; returns how many."""
    from opentelemetry import trace

    from . import _flight_spans

    plain = read(pid)
    forget(pid)
    if not plain:
        return 0
    seconds = window if window is not None else (flight.settings() or (30.0, 0))[0]
    oldest = time.time_ns() - int(seconds * 1e9)
    kept = [p for p in plain if p[3] >= oldest]
    records = [(i, p[3], _RECOVERED, p[7], p, None, None) for i, p in enumerate(kept)]
    names = {p[7]: p[8] for p in kept}
    trace_id, root_id = _flight_spans.new_ids()
    job = _flight_spans.Dump(reason, trace_id, root_id, None, records, 0,
                             len(plain) - len(kept), seconds, pid=pid, thread_names=names)
    provider = trace.get_tracer_provider()
    spans = job.spans(getattr(provider, "resource", None))
    deadline = time.monotonic() + 1.0
    for exporter in _exporters(getattr(provider, "_active_span_processor", None)):
        handoff.write(spans, handoff.exporter_key(exporter), deadline,
                      origin=(pid, process_name))
    return len(kept)


def _exporters(processor: Any) -> list[Any]:
    """The exporters of the SDK batch processors behind ``processor`` (the provider's)."""
    pending, found, seen = [processor], [], 0
    while pending and seen < 32:
        current = pending.pop()
        seen += 1
        if current is None:
            continue
        exporter = getattr(getattr(current, "_batch_processor", None), "_exporter", None)
        if exporter is not None:
            found.append(exporter)
        pending.extend(getattr(current, "_span_processors", None) or ())
        downstream = getattr(current, "downstream", None)
        if isinstance(downstream, tuple):
            pending.extend(downstream)
        pending.append(getattr(current, "_next", None))
    return found
