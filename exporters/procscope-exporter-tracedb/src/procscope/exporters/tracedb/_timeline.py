"""Everything that happened to one actor (a process, a thread or an asyncio task), in order.

``WHO`` names the actor as every command prints it (``_actors``): a process by its name,
its pid, or ``name:pid``; a thread or a task inside it after a slash
(``worker:4711/Thread-2``, ``MainProcess:4711/Task-6``). A name that fits several
processes is refused with the candidates (:class:`UnknownActorError`).

The entries come from the process's own spans (the ``pid`` index, within the run) and from
the lifecycle's view of it (who spawned it, how it ended, as its parent saw it):

* ``started``: who started it, how (start method, target);
* ``sent`` / ``received``: a message, with its queue, its content and the actor at the
  other end (paired by message id);
* ``state``: a traced object's change, snapshot or transition;
* ``span``: any other span it ran (a ``thread``/``task``/``pool_task`` span, a span of the
  program's own), with its duration;
* ``spawned`` / ``reaped``: children it started, and their ends as it saw them;
* ``exception``: an exception recorded on one of its spans, with the stack;
* ``ended``: how it ended (exit code, the signal that killed it, or nothing recorded).
"""

from __future__ import annotations

import fnmatch
import json
import signal
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from . import _messages, _processes, _query, _state
from ._actors import TASK_NAME, THREAD_NAME, actor_name, process_names
from ._query import SpanRecord
from ._runs import RunFilter

#: ``around`` keeps the entries this close to the given time, either side.
AROUND_NS = 2_000_000_000
_LIFECYCLE_KIND = "procscope.lifecycle.kind"
_ROLE = "procscope.lifecycle.role"
_CONTENT = "procscope.messaging.content"
_TEXT_MAX = 160


class UnknownActorError(ValueError):
    """WHO names no actor of the run, or several; ``candidates`` lists actor names."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


@dataclass
class TimelineEntry:
    """One thing that happened to the actor. ``actor``: who did it (the process, or one of
    its threads or tasks); ``peer``: the actor at the other end (a message's sender or
    receiver, a child, a parent); ``stack``: an exception's traceback."""

    time_ns: int
    kind: str
    actor: str
    text: str
    peer: str | None = None
    queue: str | None = None
    content: str | None = None
    error: bool = False
    stack: str | None = None
    duration_ns: int | None = None
    trace_id: str | None = None
    span_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Actor:
    """A resolved WHO: a process, and maybe one thread or task in it."""

    pid: int
    process_name: str | None
    thread: str | None = None
    task: str | None = None

    @property
    def name(self) -> str:
        return actor_name(self.process_name, self.pid, self.thread, self.task)


def _short(text: Any) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= _TEXT_MAX else value[: _TEXT_MAX - 1] + "…"


# ---------------------------------------------------------------------------- WHO


def _run_pids(conn: sqlite3.Connection, run: RunFilter | None) -> list[int]:
    if run is not None and not run.legacy:
        rows = conn.execute("SELECT pid FROM run_pids WHERE run_id = ?", (run.run_id,))
        return [int(r[0]) for r in rows]
    return [int(r[0]) for r in conn.execute("SELECT DISTINCT pid FROM spans")]


def _exported_name(conn: sqlite3.Connection, pid: int) -> str | None:
    row = conn.execute(
        "SELECT process_name FROM spans WHERE pid = ? AND process_name IS NOT NULL LIMIT 1",
        (pid,),
    ).fetchone()
    return None if row is None else str(row[0])


def all_names(
    conn: sqlite3.Connection, records: list[Any], run: RunFilter | None
) -> dict[int, str]:
    """pid -> name of every process of the run: the lifecycle's name, else the
    multiprocessing name its spans were exported under."""
    names = process_names(records)
    for pid in _run_pids(conn, run):
        if pid not in names:
            exported = _exported_name(conn, pid)
            if exported:
                names[pid] = exported
    return names


def _split(who: str) -> tuple[str, str | None]:
    process, slash, inner = who.strip().partition("/")
    return process.strip(), (inner.strip() or None) if slash else None


def _match_process(who: str, names: dict[int, str]) -> list[int]:
    name, colon, tail = who.rpartition(":")
    if colon and tail.isdecimal():
        pid = int(tail)
        return [pid] if pid in names and (not name or names[pid] == name) else []
    if who.isdecimal() and int(who) in names:
        return [int(who)]
    glob = any(ch in who for ch in "*?[")
    return sorted(
        pid
        for pid, known in names.items()
        if known == who or (glob and fnmatch.fnmatchcase(known, who))
    )


def _inner_names(
    conn: sqlite3.Connection, pid: int, run: RunFilter | None
) -> tuple[set[str], set[str]]:
    """(thread names, task names) the process's spans mention."""
    in_run, params = run.spans("s") if run is not None else ("", [])
    rows = conn.execute(
        f"SELECT DISTINCT json_extract(s.attributes, '$.\"{THREAD_NAME}\"'), "
        f"json_extract(s.attributes, '$.\"{TASK_NAME}\"') FROM spans s WHERE s.pid = ?"
        + (f" AND {in_run}" if in_run else ""),
        (pid, *params),
    ).fetchall()
    threads = {str(r[0]) for r in rows if r[0] is not None}
    tasks = {str(r[1]) for r in rows if r[1] is not None}
    return threads, tasks


def resolve_actor(
    conn: sqlite3.Connection, who: str, run: RunFilter | None, names: dict[int, str]
) -> Actor:
    """The actor WHO names in the run; UnknownActorError if none or several."""
    process, inner = _split(who)
    pids = _match_process(process, names)
    if not pids:
        candidates = [actor_name(n, p) for p, n in sorted(names.items())]
        listed = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
        raise UnknownActorError(
            f"no process {process!r} in this run; processes: {listed}", candidates
        )
    if len(pids) > 1:
        candidates = [actor_name(names[p], p) for p in pids]
        raise UnknownActorError(
            f"{process!r} is ambiguous: {', '.join(candidates[:12])} (give name:pid)", candidates
        )
    pid = pids[0]
    if inner is None:
        return Actor(pid, names.get(pid))
    threads, tasks = _inner_names(conn, pid, run)
    if inner in tasks:
        return Actor(pid, names.get(pid), task=inner)
    if inner in threads:
        return Actor(pid, names.get(pid), thread=inner)
    candidates = [actor_name(names.get(pid), pid, thread=t) for t in sorted(threads)] + [
        actor_name(names.get(pid), pid, task=t) for t in sorted(tasks)
    ]
    raise UnknownActorError(
        f"no thread or task {inner!r} in {actor_name(names.get(pid), pid)}; known: "
        + (", ".join(candidates[:12]) or "none recorded"),
        candidates,
    )


# ---------------------------------------------------------------------------- entries


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _ending_text(record: Any) -> str:
    if record.exit_signal:
        text = f"killed by {_signal_name(int(record.exit_signal))} ({record.exit_signal})"
        if record.exit_reason == _processes.TERMINATED_BY_POOL:
            text += ", terminated by its pool"
        return text
    if record.exit_code is not None:
        text = f"exited with code {record.exit_code}"
        return text + (f": {_short(record.error_message)}" if record.error_message else "")
    return "exited"


def _lifecycle_entries(
    record: Any, names: dict[int, str], me: str, command: str | None
) -> list[TimelineEntry]:
    """Who started the process, and how it ended (as its parent, or itself, saw it)."""
    entries: list[TimelineEntry] = []
    if record.start_ns is not None:
        if record.parent_pid is not None and record.kind != "program":
            parent = actor_name(names.get(record.parent_pid), record.parent_pid)
            how = ", ".join(
                part
                for part in (record.start_method, record.target and f"target {record.target}")
                if part
            )
            text = f"started by {parent}" + (f" ({how})" if how else "")
            entries.append(
                TimelineEntry(
                    record.start_ns, "started", me, text, peer=parent, trace_id=record.trace_id
                )
            )
        else:
            text = "started" + (f": {command}" if command else " (the program at the top)")
            entries.append(TimelineEntry(record.start_ns, "started", me, text))
    if record.ended and record.end_ns is not None:
        entries.append(
            TimelineEntry(
                record.end_ns, "ended", me, _ending_text(record), error=bool(record.error)
            )
        )
    elif record.end_ns is not None:
        entries.append(
            TimelineEntry(
                record.end_ns,
                "ended",
                me,
                "no end recorded: still running, or ended with nothing recorded "
                "(its last span ended here)",
            )
        )
    return entries


def _span_actor(span: SpanRecord, names: dict[int, str]) -> str:
    thread = span.attributes.get(THREAD_NAME)
    task = span.attributes.get(TASK_NAME)
    return actor_name(
        names.get(span.pid) or span.process_name,
        span.pid,
        thread if isinstance(thread, str) else None,
        task if isinstance(task, str) else None,
    )


def _peer(
    conn: sqlite3.Connection, span: SpanRecord, operation: str, names: dict[int, str]
) -> tuple[str | None, dict[str, Any]]:
    """The actor at the other end of a message, and its span's attributes."""
    message_id = span.attributes.get(_messages.MESSAGE_ID)
    if not isinstance(message_id, str):
        return None, {}
    found = _messages._partner(conn, message_id, span.span_pk, operation)
    if found is None:
        pid = span.attributes.get("procscope.messaging.sender.pid")
        if operation == "send" and isinstance(pid, int):
            thread = span.attributes.get("procscope.messaging.sender.thread.name")
            return actor_name(names.get(pid), pid, thread if isinstance(thread, str) else None), {}
        return None, {}
    row, attributes = found
    thread, task = attributes.get(THREAD_NAME), attributes.get(TASK_NAME)
    pid = int(row[9])
    return (
        actor_name(
            names.get(pid) or row[10],
            pid,
            thread if isinstance(thread, str) else None,
            task if isinstance(task, str) else None,
        ),
        attributes,
    )


def _message_entry(
    conn: sqlite3.Connection, span: SpanRecord, names: dict[int, str], who: str
) -> TimelineEntry:
    queue = str(span.attributes.get(_messages.DESTINATION, "?"))
    if span.kind == "PRODUCER":
        peer, _attrs = _peer(conn, span, "receive", names)
        content = span.attributes.get(_CONTENT)
        text = f"sent to {queue}" + (f": {_short(content)}" if content is not None else "")
        text += f" → {peer}" if peer else " (not received)"
        kind, time_ns = "sent", span.start_ns
    else:
        peer, send_attrs = _peer(conn, span, "send", names)
        # A flight recording's receive holds its own content: its send was not recorded.
        content = send_attrs.get(_CONTENT, span.attributes.get(_CONTENT))
        text = f"received from {queue}" + (f": {_short(content)}" if content is not None else "")
        text += f" ← {peer}" if peer else ""
        kind, time_ns = "received", span.end_ns
    if span.is_error:
        text += f" ✗ {span.attributes.get('error.type') or span.status_description or 'error'}"
    return TimelineEntry(
        time_ns,
        kind,
        who,
        text,
        peer=peer,
        queue=queue,
        content=None if content is None else str(content),
        error=span.is_error,
        duration_ns=span.duration_ns,
        trace_id=span.trace_id,
        span_id=span.span_id,
    )


def _lifecycle_span_entry(span: SpanRecord, names: dict[int, str], who: str) -> TimelineEntry:
    role = span.attributes.get(_ROLE)
    pid = span.attributes.get("process.pid")
    child = (
        actor_name(span.attributes.get("procscope.process.name"), pid)
        if isinstance(pid, int)
        else None
    )
    if role == "spawn":
        method = span.attributes.get("procscope.process.start_method")
        text = f"started {child or span.name}" + (f" ({method})" if method else "")
        return TimelineEntry(
            span.start_ns,
            "spawned",
            who,
            text,
            peer=child,
            error=span.is_error,
            trace_id=span.trace_id,
            span_id=span.span_id,
        )
    code = span.attributes.get("process.exit.code")
    sig = span.attributes.get("procscope.process.exit.signal")
    how = _signal_name(sig) if isinstance(sig, int) else f"exit code {code}"
    return TimelineEntry(
        span.end_ns,
        "reaped",
        who,
        f"saw {child or span.name} end: {how}",
        peer=child,
        error=span.is_error,
        trace_id=span.trace_id,
        span_id=span.span_id,
    )


def _span_entries(
    conn: sqlite3.Connection, span: SpanRecord, names: dict[int, str]
) -> list[TimelineEntry]:
    who = _span_actor(span, names)
    entries: list[TimelineEntry] = []
    kind = span.attributes.get(_LIFECYCLE_KIND)
    role = span.attributes.get(_ROLE)
    if span.kind in ("PRODUCER", "CONSUMER") and _messages.MESSAGE_ID in span.attributes:
        entries.append(_message_entry(conn, span, names, who))
    elif (
        kind in ("process", "subprocess")
        and role in ("spawn", "reap")
        and span.pid != (span.attributes.get("process.pid"))
    ):
        entries.append(_lifecycle_span_entry(span, names, who))
    elif kind in ("process", "subprocess", "program") and role in ("run", "end"):
        pass  # the process's own span: its start and end come from _lifecycle_entries
    else:
        status = f" ✗ {span.status_description or 'error'}" if span.is_error else ""
        entries.append(
            TimelineEntry(
                span.start_ns,
                "span",
                who,
                f"{span.name}{status}",
                error=span.is_error,
                duration_ns=span.duration_ns,
                trace_id=span.trace_id,
                span_id=span.span_id,
            )
        )
    for event in span.events:
        if event.name == "exception":
            kind_name = event.attributes.get("exception.type", "exception")
            message = event.attributes.get("exception.message", "")
            entries.append(
                TimelineEntry(
                    event.time_ns,
                    "exception",
                    who,
                    _short(f"{kind_name}: {message}"),
                    error=True,
                    stack=event.attributes.get("exception.stacktrace"),
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                )
            )
        elif event.name in _state._STATE_EVENTS:
            record = _state._record(
                (
                    0,
                    event.name,
                    event.time_ns,
                    json.dumps(event.attributes),
                    span.pid,
                    bytes.fromhex(span.trace_id),
                    0,
                )
            )
            if record is not None:
                entries.append(
                    TimelineEntry(
                        event.time_ns,
                        "state",
                        who,
                        _short(f"{record.object}: {_state.describe(record)}"),
                        trace_id=span.trace_id,
                        span_id=span.span_id,
                    )
                )
    return entries


def _of_actor(spans: list[SpanRecord], actor: Actor) -> list[SpanRecord]:
    """The spans of a thread or task: those naming it, and the spans under them."""
    if actor.thread is None and actor.task is None:
        return spans
    key, value = (TASK_NAME, actor.task) if actor.task is not None else (THREAD_NAME, actor.thread)
    mine = {s.span_id for s in spans if s.attributes.get(key) == value}
    changed = True
    while changed:  # descendants (spans made inside the task carry no task name)
        changed = False
        for span in spans:
            if span.span_id not in mine and span.parent_span_id in mine:
                mine.add(span.span_id)
                changed = True
    return [s for s in spans if s.span_id in mine]


def _window(
    conn: sqlite3.Connection,
    where: str,
    params: list[Any],
    around: int | None,
    last: int | None,
    factor: int,
) -> tuple[tuple[str, list[Any]], int | None]:
    """The actor's spans that can hold entries within AROUND_NS of ``around``, or the
    ``last`` ones (about ``factor`` spans per entry wanted), and the time from which
    every entry is read (None: not cut). An entry is at its span's start or at one of
    its events, so within the span's extent."""
    if around is not None:
        return (
            (f"{where} AND s.start_ns <= ? AND s.end_ns >= ?",
             [*params, around + AROUND_NS, around - AROUND_NS]),
            None,
        )  # fmt: skip
    if last is not None and last > 0:
        row = conn.execute(
            f"SELECT s.start_ns FROM spans s WHERE {where} "
            "ORDER BY s.start_ns DESC LIMIT 1 OFFSET ?",
            [*params, last * factor],
        ).fetchone()
        if row is not None:
            return (
                (f"{where} AND (s.start_ns >= ? OR s.end_ns >= ?)", [*params, row[0], row[0]]),
                int(row[0]),
            )
    return (where, params), None


def timeline(
    conn: sqlite3.Connection,
    who: str,
    run: RunFilter | None = None,
    around: int | None = None,
    last: int | None = None,
    command: str | None = None,
) -> tuple[Actor, list[TimelineEntry]]:
    """The actor WHO names, and what happened to it, oldest first (see the module)."""
    conn.execute("BEGIN")
    try:
        records = _processes.processes(conn, run)
        names = all_names(conn, records, run)
        actor = resolve_actor(conn, who, run, names)
        me = actor.name
        where = "s.pid = ?"
        params: list[Any] = [actor.pid]
        in_run, run_params = run.spans("s") if run is not None else ("", [])
        if in_run:
            where += f" AND {in_run}"
            params += run_params
        # around/last read only the spans that can make entries there (a main process
        # has hundreds of thousands: reading all took seconds). Every entry at or after
        # the cut is then read; when fewer than `last` are (a thread's entries among its
        # process's spans), the window is widened.
        factor = 4
        while True:
            narrowed, cut = _window(conn, where, params, around, last, factor)
            spans = _of_actor(_query.fetch_spans(conn, *narrowed), actor)
            entries: list[TimelineEntry] = []
            if actor.thread is None and actor.task is None:
                for record in records:
                    if record.pid == actor.pid:
                        entries.extend(_lifecycle_entries(record, names, me, command))
            for span in spans:
                entries.extend(_span_entries(conn, span, names))
            if cut is None or last is None or sum(e.time_ns >= cut for e in entries) >= last:
                break
            factor *= 8
    finally:
        conn.execute("COMMIT")
    order = {"started": 0, "ended": 2}
    entries.sort(key=lambda e: (e.time_ns, order.get(e.kind, 1)))
    if around is not None:
        entries = [e for e in entries if abs(e.time_ns - around) <= AROUND_NS]
    if last is not None:
        entries = entries[-last:] if last > 0 else []
    return actor, entries
