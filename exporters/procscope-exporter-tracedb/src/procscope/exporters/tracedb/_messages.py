"""Messages through queues and pipes, rebuilt from the messaging instrumentor's spans.

Every sampled message has a producer (send) span and, once received, a consumer
(receive) span; both carry the same ``messaging.message.id`` (the producer span's id),
which the trace DB indexes, so a message is the group of spans sharing that id. A message
sent but not (yet) received, or received in a process whose spans were not exported,
has no receiver. Send and receive spans may come from different processes.

``sender`` and ``receiver`` filters match a process or a thread: the pid, the process name
(``SpawnProcess-1``, ``MainProcess``) or the thread name, exactly or as a glob
(``Spawn*``); ``queue`` matches the destination name the same way.
"""

from __future__ import annotations

import fnmatch
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ._actors import TASK_NAME, actor_name
from ._query import json_object
from ._runs import RunFilter
from ._schema import indexed_keys, span_id_from_db, trace_id_from_db

MESSAGE_ID = "messaging.message.id"
DESTINATION = "messaging.destination.name"


@dataclass
class MessageEnd:
    """One side of a message: the span, and the process and thread that made it."""

    span_id: str
    name: str
    pid: int
    process_name: str | None
    thread_id: int | None
    thread_name: str | None
    start_ns: int
    end_ns: int
    error: str | None = None
    task_name: str | None = None

    def who(self) -> str:
        """The actor: ``name:pid``, then ``/task`` or ``/thread`` (not the main thread)."""
        return actor_name(self.process_name, self.pid, self.thread_name, self.task_name)


@dataclass
class MessageRecord:
    """One message: where it went, who sent and received it, when, how big, which trace."""

    message_id: str
    queue: str
    system: str | None
    trace_id: str
    sender: MessageEnd | None
    receiver: MessageEnd | None
    sent_ns: int
    received_ns: int | None
    wait_ns: int | None
    block_ns: int | None
    size: int | None
    content: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for side, end in (("sender", self.sender), ("receiver", self.receiver)):
            if end is not None:
                data[side]["actor"] = end.who()
        return data


def _end(row: sqlite3.Row | tuple[Any, ...], attributes: dict[str, Any]) -> MessageEnd:
    _pk, _trace, span_id, name, start_ns, end_ns, status, description, _attrs, pid, pname = row
    error = None
    if status == 2:
        error = attributes.get("error.type") or description or "error"
    return MessageEnd(
        span_id=span_id_from_db(span_id) or "",
        name=name,
        pid=int(pid),
        process_name=pname,
        thread_id=attributes.get("thread.id"),
        thread_name=attributes.get("thread.name"),
        start_ns=int(start_ns),
        end_ns=int(end_ns),
        error=error,
        task_name=attributes.get(TASK_NAME),
    )


def _matches(pattern: str, end: MessageEnd | None) -> bool:
    if end is None:
        return False
    # Also the actor's name ("name:pid/task"), as the FROM and TO columns print it.
    candidates = [
        str(end.pid), end.process_name, end.thread_name, end.task_name,
        actor_name(end.process_name, end.pid), end.who(),
    ]
    glob = any(ch in pattern for ch in "*?[")
    for candidate in candidates:
        if candidate is None:
            continue
        if candidate == pattern or (glob and fnmatch.fnmatchcase(candidate, pattern)):
            return True
    return False


def _queue_matches(pattern: str, name: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern


_COLUMNS = (
    "s.span_pk, s.trace_id, s.span_id, s.name, s.start_ns, s.end_ns, s.status_code, "
    "s.status_description, s.attributes, s.pid, s.process_name"
)
# SpanKind values as stored: PRODUCER (send) and CONSUMER (receive) spans.
_MESSAGE_KINDS = (3, 4)
# A receive may start before its send (a blocking get) and end long after it: time
# bounds on the walk are widened by this much, then applied exactly to each message.
_SLACK_NS = 60_000_000_000


def _walk(
    conn: sqlite3.Connection,
    start_ns: int | None,
    end_ns: int | None,
    newest: bool,
    run: RunFilter | None = None,
) -> sqlite3.Cursor:
    """Producer and consumer spans in time order, streamed (the start-time index)."""
    clauses = [f"s.kind IN {_MESSAGE_KINDS}"]
    params: list[Any] = []
    in_run, run_params = run.spans("s") if run is not None else ("", [])
    if in_run:
        clauses.append(in_run)
        params.extend(run_params)
    if start_ns is not None:
        clauses.append("s.start_ns >= ?")
        params.append(int(start_ns) - _SLACK_NS)
        # Of the spans in the slack, only a receive still waiting at start_ns can belong
        # to a message sent after it: the rest are left to SQLite, not parsed and dropped.
        clauses.append(f"(s.start_ns >= ? OR (s.kind = {_MESSAGE_KINDS[1]} AND s.end_ns >= ?))")
        params.extend((int(start_ns), int(start_ns)))
    if end_ns is not None:
        clauses.append("s.start_ns < ?")
        params.append(int(end_ns) + _SLACK_NS)
    order = "DESC" if newest else "ASC"
    return conn.execute(
        f"SELECT {_COLUMNS} FROM spans s WHERE {' AND '.join(clauses)} "
        f"ORDER BY s.start_ns {order}, s.span_pk {order}",
        params,
    )


def _partner(
    conn: sqlite3.Connection, message_id: str, span_pk: int, operation: str
) -> tuple[Any, dict[str, Any]] | None:
    """The first other span of the message with the given operation (an index seek)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM span_attrs a JOIN spans s ON s.span_pk = a.span_pk "
        "WHERE a.key = ? AND a.value = ? AND a.span_pk != ? ORDER BY s.span_pk",
        (MESSAGE_ID, message_id, span_pk),
    ).fetchall()
    for row in rows:
        attributes = _attributes(row)
        if attributes.get("messaging.operation.type") == operation:
            return row, attributes
    return None


def _attributes(row: Any) -> dict[str, Any]:
    return json_object(row[8])


def messages(
    conn: sqlite3.Connection,
    queue: str | None = None,
    sender: str | None = None,
    receiver: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    limit: int | None = None,
    newest: bool = False,
    run: RunFilter | None = None,
    names: Mapping[int, str] | None = None,
) -> list[MessageRecord]:
    """Each message with its producer and consumer spans, processes and threads, by send time.

    With ``limit``, the first ``limit`` messages, or with ``newest`` the last ``limit``
    (still returned oldest first). The spans are walked in time order and each message is
    completed through the message-id index, so a page costs in proportion to the spans
    walked before it is full, not to the size of the DB.
    """
    indexed, _ = indexed_keys(conn)
    if MESSAGE_ID not in indexed:
        return []
    wanted = None if limit is None else max(0, int(limit))
    if wanted == 0:
        return []
    records: list[MessageRecord] = []
    done: set[str] = set()
    for row in _walk(conn, start_ns, end_ns, newest, run):
        attributes = _attributes(row)
        message_id = attributes.get(MESSAGE_ID)
        operation = attributes.get("messaging.operation.type")
        if not isinstance(message_id, str) or message_id in done:
            continue
        # What the filters below would drop anyway, dropped before looking up the other
        # end: the walk's slack reaches 60 s before `start_ns`, and a lookup per message
        # there made a `since` in a large run cost seconds.
        if queue is not None and not _queue_matches(queue, str(attributes.get(DESTINATION, ""))):
            continue
        if operation == "send" and (
            (start_ns is not None and row[4] < start_ns)
            or (end_ns is not None and row[4] >= end_ns)
        ):
            continue  # a send's message is sent when its span starts
        if operation == "receive" and start_ns is not None and row[5] < start_ns:
            continue  # received before start_ns: sent before it too
        if operation == "send":
            group: dict[str, Any] = {"send": (row, attributes)}
            receive = _partner(conn, message_id, row[0], "receive")
            if receive is not None:
                group["receive"] = receive
        elif operation == "receive":
            if _partner(conn, message_id, row[0], "send") is not None:
                continue  # the walk meets (or met) its send span: recorded there
            group = {"receive": (row, attributes)}
        else:
            continue
        done.add(message_id)
        record = _record(message_id, group)
        for end in (record.sender, record.receiver):
            if end is not None and names:
                # Each process by its one name (see _actors), before the filters match.
                end.process_name = names.get(end.pid) or end.process_name
        if start_ns is not None and record.sent_ns < start_ns:
            continue
        if end_ns is not None and record.sent_ns >= end_ns:
            continue
        if queue is not None and not _queue_matches(queue, record.queue):
            continue
        if sender is not None and not _matches(sender, record.sender):
            continue
        if receiver is not None and not _matches(receiver, record.receiver):
            continue
        records.append(record)
        if wanted is not None and len(records) >= wanted:
            break
    records.sort(key=lambda r: (r.sent_ns, r.message_id))
    return records


def _record(message_id: str, group: dict[str, Any]) -> MessageRecord:
    send: Any = group.get("send")
    receive: Any = group.get("receive")
    first_row, first_attributes = send if send is not None else receive
    sender = _end(*send) if send else None
    receiver = _end(*receive) if receive else None
    send_attrs = send[1] if send else {}
    recv_attrs = receive[1] if receive else {}
    if sender is None and recv_attrs.get("procscope.messaging.sender.pid") is not None:
        # The send span was not exported (its process died first): what the carrier said.
        sender = MessageEnd(
            span_id="",
            name="",
            pid=int(recv_attrs["procscope.messaging.sender.pid"]),
            process_name=None,
            thread_id=recv_attrs.get("procscope.messaging.sender.thread.id"),
            thread_name=recv_attrs.get("procscope.messaging.sender.thread.name"),
            start_ns=0,
            end_ns=0,
        )

    def seconds_to_ns(value: Any) -> int | None:
        return round(float(value) * 1e9) if isinstance(value, (int, float)) else None

    size = send_attrs.get("messaging.message.body.size", recv_attrs.get(
        "messaging.message.body.size"))
    wait_ns = seconds_to_ns(recv_attrs.get("procscope.messaging.wait_time"))
    sent_ns = sender.start_ns if send and sender else int(first_row[4])
    if not send and wait_ns is not None and receiver is not None:
        sent_ns = receiver.end_ns - wait_ns
    return MessageRecord(
        message_id=message_id,
        queue=str(first_attributes.get(DESTINATION, "")),
        system=first_attributes.get("messaging.system"),
        trace_id=trace_id_from_db(first_row[1]),
        sender=sender,
        receiver=receiver,
        sent_ns=sent_ns,
        received_ns=receiver.end_ns if receiver else None,
        wait_ns=wait_ns,
        block_ns=seconds_to_ns(recv_attrs.get("procscope.messaging.block_time")),
        size=size if isinstance(size, int) else None,
        content=send_attrs.get("procscope.messaging.content",
                               recv_attrs.get("procscope.messaging.content")),
    )
