"""A trace DB as a Perfetto trace: TrackEvent packets, written one by one.

What goes where (https://perfetto.dev/docs/reference/synthetic-track-event):

* a **process track** (ProcessDescriptor: pid, name) per process, and under it a **thread
  track** (ThreadDescriptor) per thread, or a **task track** (a named track, ``Task-6``)
  per asyncio task: a ``task`` lifecycle span and the spans under it;
* a **slice** (SLICE_BEGIN/SLICE_END) per span, its attributes, ids and status as debug
  annotations. Slices on one track must nest; a span that would overlap its neighbours
  without nesting goes on an extra lane, a track named ``<thread> (overlap N)``;
* a **flow** per message, from its send span to its receive span (``flow_ids`` /
  ``terminating_flow_ids``, the message id). Perfetto joins a flow's ends in time order,
  so when the receive began before the send (a get blocked waiting), the flow ends on an
  instant ``received`` at the end of the receive slice, when the message arrived;
* a **counter track** (CounterDescriptor) per numeric field of a traced object, a value
  (TYPE_COUNTER) per snapshot or change of that field;
* **instants** for exceptions (``exception RuntimeError``) and for the ends of processes
  (``exit code 1``, ``killed by signal 9 (SIGKILL)``; ``reaped: ...`` when the parent saw
  it) on the process's track.

A span goes on its task's track when it descends from the task's span, except a receive
span: its parent is the send, in another flow of control, so it goes on its thread's.

Memory stays bounded whatever the DB's size: spans are read page by page in start order
(see ``_source``), and only the open slices of each lane, the tracks of threads and of
tasks not ended yet, and a bounded map from recent span ids to their tracks are kept.
END packets are written when the lane's next slice begins (or at the end), so they can
come later in the file than their time: Perfetto's trace processor sorts packets by
timestamp before it reads them, keeping the file's order between equal timestamps, which
is why a lane's ENDs are written innermost first.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import signal
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import IO, Any

from procscope.exporters.tracedb._query import SpanRecord

from . import _wire

# Field numbers, from Perfetto's protos/perfetto/trace/*.proto.
_TRACE_PACKET = 1
_P_TIMESTAMP, _P_SEQUENCE_ID, _P_TRACK_EVENT, _P_FLAGS, _P_DESCRIPTOR = 8, 10, 11, 13, 60
_P_FIRST_ON_SEQUENCE = 87
_D_UUID, _D_NAME, _D_PROCESS, _D_THREAD, _D_PARENT, _D_COUNTER = 1, 2, 3, 4, 5, 8
_PROC_PID, _PROC_NAME = 1, 6
_THREAD_PID, _THREAD_TID, _THREAD_NAME = 1, 2, 5
_E_ANNOTATION, _E_TYPE, _E_TRACK, _E_CATEGORY, _E_NAME = 4, 9, 11, 22, 23
_E_DOUBLE_COUNTER, _E_FLOW, _E_TERMINATING_FLOW = 44, 47, 48
_A_BOOL, _A_INT, _A_DOUBLE, _A_STRING, _A_NAME = 2, 4, 5, 6, 10
SLICE_BEGIN, SLICE_END, INSTANT, COUNTER = 1, 2, 3, 4
_SEQ_INCREMENTAL_STATE_CLEARED = 1
SEQUENCE_ID = 0x70736370  # any constant: every packet is on this one sequence
_SEQUENCE_FIELD = _wire.uint(_P_SEQUENCE_ID, SEQUENCE_ID)

_KINDS_PRODUCER, _KINDS_CONSUMER = "PRODUCER", "CONSUMER"
MESSAGE_ID = "messaging.message.id"
WAIT_TIME = "procscope.messaging.wait_time"
STATE_EVENTS = ("procscope.state.snapshot", "procscope.state.change", "procscope.state.transition")
# Spans whose track is remembered for their children: the most recent this many.
RECENT_SPANS = 100_000
_INT64 = (-(1 << 63), (1 << 63) - 1)
# A receive that began less than this after the send's start is treated as begun before
# it: the send's start is computed back from the receive's wait time, a float.
_CLOCK_SLACK_NS = 1_000


def _uuid(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1 or 1  # positive, non-zero


# Encoded annotations of names and values that repeat (a span's kind, its queue, its
# thread's name...), and encoded annotation names; bounded.
_ANNOTATIONS: dict[tuple[str, Any], bytes] = {}
_NAMES: dict[str, bytes] = {}
_CACHE_LIMIT = 50_000
_CACHED_TEXT = 64  # longer strings are rarely repeated


def _annotation(name: str, value: Any) -> bytes:
    """A DebugAnnotation field: ``name`` and ``value`` (an int, float, bool or text;
    anything else as JSON text)."""
    cacheable = (isinstance(value, str) and len(value) <= _CACHED_TEXT) or isinstance(value, bool)
    if cacheable:
        found = _ANNOTATIONS.get((name, value))
        if found is not None:
            return found
    encoded = _wire.message(_E_ANNOTATION, _annotation_body(name, value))
    if cacheable and len(_ANNOTATIONS) < _CACHE_LIMIT:
        _ANNOTATIONS[(name, value)] = encoded
    return encoded


def _annotation_body(name: str, value: Any) -> bytes:
    body = _NAMES.get(name)
    if body is None:
        body = _wire.string(_A_NAME, name)
        if len(_NAMES) < _CACHE_LIMIT:
            _NAMES[name] = body
    if isinstance(value, bool):
        body += _wire.boolean(_A_BOOL, value)
    elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        body += _wire.uint(_A_INT, value)
    elif isinstance(value, float):
        body += _wire.double(_A_DOUBLE, value)
    elif isinstance(value, str):
        body += _wire.string(_A_STRING, value)
    else:
        body += _wire.string(_A_STRING, json.dumps(value, default=str))
    return body


def _number(text: Any) -> float | None:
    """A state value's repr as a number, when it is one (``3``, ``2.5``; not ``True``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not text or text[0] not in "+-.0123456789":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def exit_label(attributes: dict[str, Any]) -> str | None:
    """``exit code 1`` or ``killed by signal 9 (SIGKILL)`` from a lifecycle span."""
    number = attributes.get("procscope.process.exit.signal")
    if isinstance(number, int):
        try:
            return f"killed by signal {number} ({signal.Signals(number).name})"
        except ValueError:
            return f"killed by signal {number}"
    code = attributes.get("process.exit.code")
    if isinstance(code, int):
        return f"exit code {code}"
    return None


class _Lane:
    """One track of slices that nest: the end times of its open slices, outermost first."""

    __slots__ = ("open", "uuid")

    def __init__(self, uuid: int) -> None:
        self.uuid = uuid
        self.open: list[int] = []


class _Track:
    """A thread or task track and its overflow lanes."""

    __slots__ = ("label", "lanes", "pid", "thread_id")

    def __init__(self, pid: int, label: str, thread_id: int | None, first_lane: _Lane) -> None:
        self.pid = pid
        self.label = label
        self.thread_id = thread_id
        self.lanes = [first_lane]


class PerfettoWriter:
    """Writes packets to a binary file as it is given spans in start order."""

    def __init__(self, out: IO[bytes], process_names: Mapping[int, str] | None = None) -> None:
        self.out = out
        self.process_names = process_names or {}
        self.processes: dict[int, int] = {}  # pid -> track uuid
        self.tracks: dict[tuple[Any, ...], _Track] = {}
        self.counters: dict[tuple[int, str, str], int] = {}
        # span id -> track key, oldest first (an OrderedDict pops its oldest in O(1)).
        self.recent: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self.task_ends: list[tuple[int, tuple[Any, ...]]] = []  # heap of (end, task key)
        self.counts = {"slices": 0, "flows": 0, "instants": 0, "counters": 0, "packets": 0}
        self._track_fields: dict[int, bytes] = {}  # track uuid -> its encoded field
        self._first = True

    # ------------------------------------------------------------------ packets

    def _packet(self, body: bytes, timestamp: int | None = None) -> None:
        head = b""
        if timestamp is not None:
            head = _wire.uint(_P_TIMESTAMP, timestamp)
        head += _SEQUENCE_FIELD
        if self._first:
            head += _wire.uint(_P_FLAGS, _SEQ_INCREMENTAL_STATE_CLEARED)
            head += _wire.boolean(_P_FIRST_ON_SEQUENCE, True)
            self._first = False
        self.out.write(_wire.message(_TRACE_PACKET, head + body))
        self.counts["packets"] += 1

    def _event(self, timestamp: int, kind: int, track: int, extra: bytes = b"") -> None:
        track_field = self._track_fields.get(track)
        if track_field is None:
            track_field = self._track_fields[track] = _wire.uint(_E_TRACK, track)
        body = _wire.uint(_E_TYPE, kind) + track_field + extra
        self._packet(_wire.message(_P_TRACK_EVENT, body), timestamp)

    def _descriptor(self, body: bytes) -> None:
        self._packet(_wire.message(_P_DESCRIPTOR, body))

    # ------------------------------------------------------------------ tracks

    def process_track(self, pid: int, name: str | None) -> int:
        """The process's track: named by its one name (``process_names``, as every
        command names it), else ``name``."""
        uuid = self.processes.get(pid)
        if uuid is None:
            uuid = self.processes[pid] = _uuid("process", pid)
            name = self.process_names.get(pid) or name
            process = _wire.uint(_PROC_PID, pid)
            if name:
                process += _wire.string(_PROC_NAME, name)
            self._descriptor(_wire.uint(_D_UUID, uuid) + _wire.message(_D_PROCESS, process))
        return uuid

    def _track(self, key: tuple[Any, ...], span: SpanRecord, label: str, tid: int | None) -> _Track:
        track = self.tracks.get(key)
        if track is not None:
            return track
        parent = self.process_track(span.pid, span.process_name)
        uuid = _uuid(*key)
        body = _wire.uint(_D_UUID, uuid) + _wire.uint(_D_PARENT, parent)
        if key[0] == "thread":
            thread = (
                _wire.uint(_THREAD_PID, span.pid)
                + _wire.uint(_THREAD_TID, key[2])
                + _wire.string(_THREAD_NAME, label)
            )
            body += _wire.message(_D_THREAD, thread)
        else:
            body += _wire.string(_D_NAME, label)
        self._descriptor(body)
        track = self.tracks[key] = _Track(span.pid, label, tid, _Lane(uuid))
        return track

    def _lane(self, key: tuple[Any, ...], track: _Track, span: SpanRecord) -> _Lane:
        """The first lane of the track where the span nests; a new lane when none."""
        for lane in track.lanes:
            self._close(lane, span.start_ns)
            if not lane.open or lane.open[-1] >= span.end_ns:
                return lane
        uuid = _uuid(*key, len(track.lanes))
        name = f"{track.label} (overlap {len(track.lanes)})"
        parent = self.process_track(span.pid, span.process_name)
        self._descriptor(
            _wire.uint(_D_UUID, uuid) + _wire.uint(_D_PARENT, parent) + _wire.string(_D_NAME, name)
        )
        lane = _Lane(uuid)
        track.lanes.append(lane)
        return lane

    def _close(self, lane: _Lane, until_ns: int | None) -> None:
        """End (innermost first) the lane's slices that ended by ``until_ns`` (None: all)."""
        while lane.open and (until_ns is None or lane.open[-1] <= until_ns):
            self._event(lane.open.pop(), SLICE_END, lane.uuid)

    def _key_for(self, span: SpanRecord) -> tuple[tuple[Any, ...], str, int | None]:
        """The span's track: its own task, its parent's task, its thread, its parent's
        track, or the process's main thread (whose native id is the pid)."""
        attrs = span.attributes
        tid = attrs.get("thread.id")
        tid = tid if isinstance(tid, int) else None
        parent_key = self.recent.get(span.parent_span_id or "")
        if parent_key is not None and (
            parent_key[1] != span.pid or parent_key not in self.tracks or span.kind == "CONSUMER"
        ):
            # A receive's parent is its send, in another flow of control (another task,
            # thread or process): it goes on its own thread's track.
            parent_key = None
        if attrs.get("procscope.lifecycle.kind") == "task":
            label = str(attrs.get("procscope.task.name") or span.name)
            key = ("task", span.pid, span.span_id)
            heapq.heappush(self.task_ends, (span.end_ns, key))
            return key, label, tid
        if parent_key is not None and parent_key[0] == "task":
            task = self.tracks[parent_key]
            if tid is None or task.thread_id is None or tid == task.thread_id:
                return parent_key, task.label, task.thread_id
        if tid is not None:
            return ("thread", span.pid, tid), str(attrs.get("thread.name") or tid), tid
        if parent_key is not None:
            track = self.tracks[parent_key]
            return parent_key, track.label, track.thread_id
        return ("thread", span.pid, span.pid), "MainThread", span.pid

    # ------------------------------------------------------------------ spans

    def write_spans(self, spans: Iterable[SpanRecord]) -> None:
        """Every span, given in start order. Spans that start together are placed longest
        first, so that a parent starting with its child encloses it."""
        group: list[SpanRecord] = []
        for span in spans:
            if group and span.start_ns != group[0].start_ns:
                self._write_group(group)
                group = []
            group.append(span)
        self._write_group(group)
        for track in self.tracks.values():
            for lane in track.lanes:
                self._close(lane, None)

    def _write_group(self, group: list[SpanRecord]) -> None:
        if len(group) > 1:
            group.sort(key=lambda span: -span.end_ns)
        for span in group:
            self._write_span(span)

    def _end_tasks(self, now_ns: int) -> None:
        """Forget the tracks of tasks that ended before ``now_ns`` (their slices ended):
        spans starting later are not theirs, and a run may have a task per request."""
        while self.task_ends and self.task_ends[0][0] < now_ns:
            _end, key = heapq.heappop(self.task_ends)
            track = self.tracks.pop(key, None)
            for lane in track.lanes if track else ():
                self._close(lane, None)

    def _write_span(self, span: SpanRecord) -> None:
        self._end_tasks(span.start_ns)
        key, label, tid = self._key_for(span)
        track = self._track(key, span, label, tid)
        if len(self.recent) >= RECENT_SPANS:
            self.recent.popitem(last=False)
        self.recent[span.span_id] = key
        lane = self._lane(key, track, span)
        attrs = span.attributes
        extra = _wire.string(_E_NAME, span.name)
        if span.scope_name:
            extra += _wire.string(_E_CATEGORY, span.scope_name)
        message_id = attrs.get(MESSAGE_ID)
        flow = _flow_id(message_id)
        arrived_instant = False
        if flow is not None and span.kind == _KINDS_PRODUCER:
            extra += _wire.fixed64(_E_FLOW, flow)
            self.counts["flows"] += 1
        elif flow is not None and span.kind == _KINDS_CONSUMER:
            if _began_after_send(span):
                extra += _wire.fixed64(_E_TERMINATING_FLOW, flow)
            else:
                arrived_instant = True
        extra += self._annotations(span)
        self._event(span.start_ns, SLICE_BEGIN, lane.uuid, extra)
        lane.open.append(span.end_ns)
        self.counts["slices"] += 1
        if arrived_instant:
            self._instant(
                span.end_ns,
                lane.uuid,
                "received",
                _wire.fixed64(_E_TERMINATING_FLOW, flow or 0) + _annotation(MESSAGE_ID, message_id),
            )
        for event in span.events:
            if event.name == "exception":
                kind = event.attributes.get("exception.type") or "exception"
                body = b"".join(_annotation(k, v) for k, v in event.attributes.items())
                self._instant(event.time_ns, lane.uuid, f"exception {kind}", body)
            elif event.name in STATE_EVENTS:
                self._counters(span, event.time_ns, event.attributes)
        self._process_end(span)

    def _annotations(self, span: SpanRecord) -> bytes:
        parts = [
            _annotation("trace_id", span.trace_id),
            _annotation("span_id", span.span_id),
        ]
        if span.parent_span_id:
            parts.append(_annotation("parent_span_id", span.parent_span_id))
        if span.status_code != "UNSET":
            parts.append(_annotation("status", span.status_code))
        if span.status_description:
            parts.append(_annotation("status.description", span.status_description))
        parts.extend(_annotation(k, v) for k, v in span.attributes.items())
        return b"".join(parts)

    def _instant(self, timestamp: int, track: int, name: str, extra: bytes = b"") -> None:
        self._event(timestamp, INSTANT, track, _wire.string(_E_NAME, name) + extra)
        self.counts["instants"] += 1

    def _process_end(self, span: SpanRecord) -> None:
        attrs = span.attributes
        role = attrs.get("procscope.lifecycle.role")
        if role not in ("run", "end", "reap"):
            return
        label = exit_label(attrs)
        if label is None:
            return
        pid = attrs.get("process.pid")
        pid = pid if isinstance(pid, int) else span.pid
        name = attrs.get("procscope.process.name")
        track = self.process_track(pid, str(name) if name else None)
        if role == "reap":
            self._instant(span.start_ns, track, f"reaped: {label}")
        else:
            self._instant(span.end_ns, track, label)

    def _counters(self, span: SpanRecord, time_ns: int, attrs: dict[str, Any]) -> None:
        obj = attrs.get("procscope.state.object")
        fields, values = attrs.get("procscope.state.fields"), attrs.get("procscope.state.values")
        if not isinstance(fields, list) or not isinstance(values, list) or obj is None:
            return
        for field, text in zip(fields, values):
            value = _number(text)
            if value is None:
                continue
            key = (span.pid, str(obj), str(field))
            uuid = self.counters.get(key)
            if uuid is None:
                uuid = self.counters[key] = _uuid("counter", *key)
                parent = self.process_track(span.pid, span.process_name)
                self._descriptor(
                    _wire.uint(_D_UUID, uuid)
                    + _wire.uint(_D_PARENT, parent)
                    + _wire.string(_D_NAME, f"{obj}.{field}")
                    + _wire.message(_D_COUNTER, b"")
                )
            self._event(time_ns, COUNTER, uuid, _wire.double(_E_DOUBLE_COUNTER, value))
            self.counts["counters"] += 1


def _flow_id(message_id: Any) -> int | None:
    if not isinstance(message_id, str):
        return None
    try:
        return int(message_id, 16) or None
    except ValueError:
        return None


def _began_after_send(span: SpanRecord) -> bool:
    """Whether a receive span began after its message's send did (so that Perfetto can end
    the flow on the receive slice itself). The send began ``wait_time`` before the
    receive ended; without a wait time, assume it did."""
    wait = span.attributes.get(WAIT_TIME)
    if not isinstance(wait, (int, float)):
        return True
    sent_ns = span.end_ns - int(wait * 1e9)
    return span.start_ns >= sent_ns + _CLOCK_SLACK_NS


def write_perfetto(
    spans: Iterable[SpanRecord], out: IO[bytes], process_names: Mapping[int, str] | None = None
) -> dict[str, int]:
    """Write ``spans`` (in start order) to ``out`` as a Perfetto trace; returns counts.
    ``process_names``: pid -> the name to show for it."""
    writer = PerfettoWriter(out, process_names)
    writer.write_spans(spans)
    return writer.counts
