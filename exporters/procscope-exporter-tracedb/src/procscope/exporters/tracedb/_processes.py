"""The process tree, rebuilt from the lifecycle instrumentor's spans.

A process started under procscope leaves up to three spans (docs/semantic-conventions.md,
"Lifecycle instrumentor"): the parent's ``spawn`` span, the child's own ``process`` span
(a child of the spawn span) and the parent's ``exit`` span when it reaps the child (also
a child of the spawn span). They are joined here on the spawn span's id; each of them may
be missing (a child killed by SIGKILL leaves no ``process`` span, a parent that never
reaped leaves no ``exit`` span), and whatever is left still makes one row.

A process is then placed under its parent: the row whose pid is its ``process.parent_pid``
and that started last before it (pids are reused over a long-lived DB). A parent without
a row of its own (the program at the top, which nobody spawned under procscope) gets one
made from the spans it exported: its pid, its name, its first and last span, and how it
ended when it recorded that itself (its ``end`` span, role ``end``, kind ``program``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from ._actors import actor_name
from ._query import json_object
from ._runs import RunFilter
from ._schema import span_id_from_db, trace_id_from_db

KIND_KEY = "procscope.lifecycle.kind"
PROCESS_KINDS = ("process", "subprocess", "program")
STATUS_ERROR = 2
TERMINATED_BY_POOL = "terminated_by_pool"


@dataclass
class ProcessRecord:
    """One process. Times are epoch nanoseconds; ids are hex.

    ``exit_code`` and ``exit_signal``: from the parent's ``exit`` span when it reaped the
    child, else from the child's own ``process`` span. ``error``: an unhandled exception,
    a non-zero exit code or a signal, except a signal that the parent's ``exit`` span
    explains with ``exit_reason`` ``"terminated_by_pool"`` (a pool worker that its own pool
    terminated: an expected end). ``depth``: 0 for a root of the tree.
    """

    pid: int | None
    parent_pid: int | None
    name: str
    kind: str
    start_method: str | None
    start_ns: int | None
    end_ns: int | None
    exit_code: int | None = None
    exit_signal: int | None = None
    error: bool = False
    error_message: str | None = None
    target: str | None = None
    trace_id: str | None = None
    spawn_span_id: str | None = None
    run_span_id: str | None = None
    exit_reason: str | None = None
    depth: int = 0
    children: list[ProcessRecord] = field(default_factory=list, repr=False)

    @property
    def duration_ns(self) -> int | None:
        if self.start_ns is None or self.end_ns is None:
            return None
        return self.end_ns - self.start_ns

    @property
    def ended(self) -> bool:
        return self.exit_code is not None or self.exit_signal is not None

    @property
    def actor(self) -> str:
        """Its name everywhere: ``name:pid`` (see ``_actors``)."""
        return actor_name(self.name, self.pid)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["actor"] = self.actor
        data.pop("children")
        data["duration_ns"] = self.duration_ns
        data["children_pids"] = [child.pid for child in self.children]
        return data


@dataclass
class _Span:
    trace_id: bytes
    span_id: int
    parent_span_id: int | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    status_description: str | None
    attributes: dict[str, Any]
    pid: int
    span_pk: int


def _load(conn: sqlite3.Connection, run: RunFilter | None) -> list[_Span]:
    marks = ",".join("?" for _ in PROCESS_KINDS)
    in_run, run_params = run.spans("s") if run is not None else ("", [])
    rows = conn.execute(
        "SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_ns, s.end_ns, "
        "s.status_code, s.status_description, s.attributes, s.pid, s.span_pk "
        "FROM span_attrs a JOIN spans s ON s.span_pk = a.span_pk "
        f"WHERE a.key = ? AND a.value IN ({marks})"
        + (f" AND {in_run}" if in_run else "")
        + " ORDER BY s.start_ns",
        (KIND_KEY, *PROCESS_KINDS, *run_params),
    ).fetchall()
    return [
        _Span(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json_object(r[8]), r[9], r[10])
        for r in rows
    ]


def _exception_message(conn: sqlite3.Connection, span_pk: int) -> str | None:
    row = conn.execute(
        "SELECT attributes FROM events WHERE span_pk = ? AND name = 'exception' LIMIT 1",
        (span_pk,),
    ).fetchone()
    if row is None:
        return None
    attrs = json_object(row[0])
    kind, message = attrs.get("exception.type"), attrs.get("exception.message")
    return f"{kind}: {message}" if kind else message


class _Group:
    __slots__ = ("reap", "run", "spawn")

    def __init__(self) -> None:
        self.spawn: _Span | None = None
        self.run: _Span | None = None
        self.reap: _Span | None = None


def _record(conn: sqlite3.Connection, group: _Group) -> ProcessRecord:
    # Who and what: the parent's spawn span knows best (the pid it started, itself as the
    # parent); then the child's own span; then the reap.
    spans = [s for s in (group.spawn, group.run, group.reap) if s is not None]

    def first(key: str) -> Any:
        for span in spans:
            if key in span.attributes:
                return span.attributes[key]
        return None

    anchor = group.spawn or group.run or group.reap
    assert anchor is not None
    # The child's own view of its life when it has one; else the parent's (spawn to reap).
    start = (group.run or group.spawn or group.reap).start_ns  # type: ignore[union-attr]
    if group.run is not None:
        end: int | None = group.run.end_ns
    elif group.reap is not None:
        end = group.reap.end_ns
    else:
        end = None
    ended = group.reap or group.run
    exit_code = exit_signal = exit_reason = None
    if group.reap is not None:
        # Only the parent knows why it ended the child (the child cannot tell who sent it
        # a signal): its mark decides whether the signal was expected.
        exit_reason = group.reap.attributes.get("procscope.process.exit.reason")
    if ended is not None:
        exit_code = ended.attributes.get("process.exit.code")
        exit_signal = ended.attributes.get("procscope.process.exit.signal")
        if exit_code is None and exit_signal is None and group.run is not None:
            exit_code = group.run.attributes.get("process.exit.code")
            exit_signal = group.run.attributes.get("procscope.process.exit.signal")
    message = None
    if group.run is not None and group.run.status_code == STATUS_ERROR:
        message = _exception_message(conn, group.run.span_pk) or group.run.status_description
    if message is None:
        for span in spans:
            if span.status_code == STATUS_ERROR:
                message = span.status_description
                break
    expected_signal = exit_reason == TERMINATED_BY_POOL
    error = (
        any(s.status_code == STATUS_ERROR for s in spans)
        or bool(exit_code)
        or (bool(exit_signal) and not expected_signal)
    )
    return ProcessRecord(
        pid=first("process.pid"),
        parent_pid=first("process.parent_pid"),
        name=first("procscope.process.name") or anchor.name.split(" ", 1)[-1],
        kind=first(KIND_KEY) or "process",
        start_method=first("procscope.process.start_method"),
        start_ns=start,
        end_ns=end,
        exit_code=exit_code,
        exit_signal=exit_signal,
        error=error,
        error_message=message if error else None,
        target=first("procscope.process.target"),
        trace_id=trace_id_from_db(anchor.trace_id),
        spawn_span_id=span_id_from_db(group.spawn.span_id) if group.spawn else None,
        run_span_id=span_id_from_db(group.run.span_id) if group.run else None,
        exit_reason=exit_reason,
    )


def _program(
    conn: sqlite3.Connection, pid: int, end: _Span | None = None, run: RunFilter | None = None
) -> ProcessRecord | None:
    """A row for a process nobody spawned under procscope, from the spans it exported
    (and from its own ``end`` span, when it recorded one)."""
    in_run, run_params = run.spans("s") if run is not None else ("", [])
    row = conn.execute(
        "SELECT min(s.start_ns), max(s.end_ns), max(s.process_name), max(s.resource_id) "
        "FROM spans s WHERE s.pid = ?" + (f" AND {in_run}" if in_run else ""),
        (pid, *run_params),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    name = row[2]
    if row[3] is not None:
        res = conn.execute(
            "SELECT attributes FROM resources WHERE resource_id = ?", (row[3],)
        ).fetchone()
        attrs = json_object(res[0]) if res else {}
        if attrs.get("process.pid") == pid:
            name = attrs.get("service.name") or attrs.get("process.executable.name") or name
    record = ProcessRecord(
        pid=pid,
        parent_pid=None,
        name=str(name or "python"),
        kind="program",
        start_method=None,
        start_ns=row[0],
        end_ns=row[1],
    )
    if end is not None:
        record.end_ns = end.end_ns
        record.parent_pid = end.attributes.get("process.parent_pid")
        record.exit_code = end.attributes.get("process.exit.code")
        record.exit_signal = end.attributes.get("procscope.process.exit.signal")
        record.trace_id = trace_id_from_db(end.trace_id)
        record.run_span_id = span_id_from_db(end.span_id)
        if end.status_code == STATUS_ERROR:
            record.error = True
            record.error_message = (
                _exception_message(conn, end.span_pk) or end.status_description
            )
    return record


def processes(conn: sqlite3.Connection, run: RunFilter | None = None) -> list[ProcessRecord]:
    """Every recorded process (of the run), in tree order (each after its parent,
    children by start)."""
    groups: dict[tuple[bytes, int], _Group] = {}
    ends: dict[int, _Span] = {}
    for span in _load(conn, run):
        role = span.attributes.get("procscope.lifecycle.role")
        if role == "end":  # a program's own end; the last one for a reused pid
            ends[span.pid] = span
        elif role == "spawn":
            groups.setdefault((span.trace_id, span.span_id), _Group()).spawn = span
        elif role in ("run", "reap") and span.parent_span_id is not None:
            group = groups.setdefault((span.trace_id, span.parent_span_id), _Group())
            if role == "run":
                group.run = span
            else:
                group.reap = span
        elif role == "run":  # a process span without a parent: its own group
            groups.setdefault((span.trace_id, span.span_id), _Group()).run = span
    records = [_record(conn, group) for group in groups.values()]
    records.sort(key=lambda r: r.start_ns or 0)

    # Place each under its parent: same pid as its parent_pid, the last started before it.
    by_pid: dict[int, list[ProcessRecord]] = {}
    for record in records:
        if record.pid is not None:
            by_pid.setdefault(record.pid, []).append(record)
    roots: list[ProcessRecord] = []
    programs: dict[int, ProcessRecord] = {}
    for pid, end in ends.items():
        if pid in by_pid:
            continue  # recorded as a child already
        program = _program(conn, pid, end, run)
        if program is not None:
            programs[pid] = program
            roots.append(program)
    for record in records:
        parent = None
        if record.parent_pid is not None:
            candidates = [
                c
                for c in by_pid.get(record.parent_pid, [])
                if c is not record and (c.start_ns or 0) <= (record.start_ns or 0)
            ]
            if candidates:
                parent = candidates[-1]
            elif record.parent_pid in programs:
                parent = programs[record.parent_pid]
            else:
                parent = _program(conn, record.parent_pid, run=run)
                if parent is not None:
                    programs[record.parent_pid] = parent
                    roots.append(parent)
        if parent is None:
            roots.append(record)
        else:
            parent.children.append(record)

    ordered: list[ProcessRecord] = []

    def walk(node: ProcessRecord, depth: int) -> None:
        node.depth = depth
        ordered.append(node)
        node.children.sort(key=lambda r: r.start_ns or 0)
        for child in node.children:
            walk(child, depth + 1)

    roots.sort(key=lambda r: r.start_ns or 0)
    for root in roots:
        walk(root, 0)
    return ordered
