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
import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

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

    def who(self) -> str:
        """``process-name:pid``, then ``/thread-name`` unless the main thread, for tables."""
        process = f"{self.process_name}:{self.pid}" if self.process_name else str(self.pid)
        if self.thread_name and self.thread_name != "MainThread":
            return f"{process}/{self.thread_name}"
        return process


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
        return asdict(self)


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
    )


def _matches(pattern: str, end: MessageEnd | None) -> bool:
    if end is None:
        return False
    candidates = [str(end.pid), end.process_name, end.thread_name]
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


def _rows(conn: sqlite3.Connection, start_ns: int | None, end_ns: int | None) -> list[Any]:
    columns = (
        "s.span_pk, s.trace_id, s.span_id, s.name, s.start_ns, s.end_ns, s.status_code, "
        "s.status_description, s.attributes, s.pid, s.process_name"
    )
    clauses: list[str] = []
    params: list[Any] = []
    span_keys, _ = indexed_keys(conn)
    columns_of_index = {row[1] for row in conn.execute("PRAGMA table_info(span_attrs)")}
    if MESSAGE_ID in span_keys and "key_id" in columns_of_index:
        # An index seek on the key alone: every span with a message id.
        clauses.append(
            "s.span_pk IN (SELECT span_pk FROM span_attrs WHERE key_id = "
            "(SELECT key_id FROM attr_keys WHERE key = ?))"
        )
        params.append(MESSAGE_ID)
    elif MESSAGE_ID in span_keys and "key" in columns_of_index:
        clauses.append("s.span_pk IN (SELECT span_pk FROM span_attrs WHERE key = ?)")
        params.append(MESSAGE_ID)
    else:
        clauses.append("json_extract(s.attributes, ?) IS NOT NULL")
        params.append(f'$."{MESSAGE_ID}"')
    # Time bounds apply to the send; receives come up to a minute later (long waits).
    if start_ns is not None:
        clauses.append("s.start_ns >= ?")
        params.append(int(start_ns))
    if end_ns is not None:
        clauses.append("s.start_ns < ?")
        params.append(int(end_ns) + 60_000_000_000)
    sql = f"SELECT {columns} FROM spans s WHERE {' AND '.join(clauses)} ORDER BY s.start_ns"
    return conn.execute(sql, params).fetchall()


def messages(
    conn: sqlite3.Connection,
    queue: str | None = None,
    sender: str | None = None,
    receiver: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    limit: int | None = None,
) -> list[MessageRecord]:
    """Each message with its producer and consumer spans, processes and threads, by send time."""
    groups: dict[str, dict[str, Any]] = {}
    for row in _rows(conn, start_ns, end_ns):
        try:
            attributes = json.loads(row[8]) if row[8] else {}
        except ValueError:
            continue
        message_id = attributes.get(MESSAGE_ID)
        kind = attributes.get("messaging.operation.type")
        if not isinstance(message_id, str) or kind not in ("send", "receive"):
            continue
        group = groups.setdefault(message_id, {})
        if kind in group:  # a duplicate (re-exported span): the first one stands
            continue
        group[kind] = (row, attributes)
    records = []
    for message_id, group in groups.items():
        record = _record(message_id, group)
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
    records.sort(key=lambda r: (r.sent_ns, r.message_id))
    if limit is not None:
        records = records[: max(0, int(limit))]
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
