"""The viewer's lanes: one per process, nested lanes per thread and asyncio task.

Lanes are ordered by the process tree (``TraceDB.processes()``, each process after its
parent). Under a process come its threads (from the lifecycle instrumentor's ``thread``
spans, by start), and under a thread the tasks its event loop ran (``task`` spans). The
main thread's spans are drawn on the process's own lane. A thread that has no ``thread``
span (started before instrumentation, a foreign thread) gets its lane when a window first
shows one of its spans (:meth:`Lanes.lane_for`).

Lane ids are short strings the page uses as keys: ``p<pid>``, ``t<pid>.<thread id>``,
``k<span_pk of the task span>``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, fields
from typing import Any

KIND_KEY = "procscope.lifecycle.kind"
#: Task lanes per thread at most: tasks share lanes (first free lane by time, then the one
#: that frees first), as a program may run a task per request (100,000 lanes otherwise).
MAX_TASK_LANES = 32
STATUS_ERROR = 2


@dataclass
class Lane:
    id: str
    kind: str  # "process", "thread" or "task"
    label: str
    pid: int
    parent: str | None
    depth: int
    start_ns: int | None = None
    end_ns: int | None = None
    #: span_pk of the span that is the lane's lifetime (process, thread or task span)
    span: int | None = None
    error: bool = False
    #: what ended it: "exit 1", "signal 9", "RuntimeError: ...", for the lane's end mark
    end_mark: str | None = None
    thread_id: int | None = None
    #: tasks drawn on a task lane (they share lanes past MAX_TASK_LANES per thread)
    tasks: int = 1
    first_label: str | None = None
    children: list[Lane] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "children"}


def _end_mark(record: Any) -> str | None:
    if record.exit_signal is not None:
        return f"signal {record.exit_signal}"
    if record.error_message:
        return str(record.error_message)
    if record.exit_code is not None:
        return f"exit {record.exit_code}"
    return None


class Lanes:
    """Every lane of one DB (or one run), and which lane a span belongs on."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        db: Any,
        pids: set[int] | None = None,
        between: tuple[int, int] = (-(2**63), 2**63 - 1),
        run: str | None = None,
    ) -> None:
        self._between = between
        self._run = run
        self.by_id: dict[str, Lane] = {}
        self._roots: list[Lane] = []
        self._task_lanes: dict[int, str] = {}  # span_id (stored form) of a task span -> lane
        self._task_span_lanes: dict[int, str] = {}  # span_pk of a task span -> lane
        self._slots: dict[str, list[Lane]] = {}  # thread lane -> its task lanes
        #: lanes made while placing spans (threads without a ``thread`` span), for the
        #: caller to send to the page; it empties the list after each window
        self.new_lanes: list[str] = []
        self._load(conn, db, pids)

    # ------------------------------------------------------------------ building

    def _add(self, lane: Lane) -> Lane:
        existing = self.by_id.get(lane.id)
        if existing is not None:
            return existing
        self.by_id[lane.id] = lane
        parent = self.by_id.get(lane.parent) if lane.parent else None
        (parent.children if parent else self._roots).append(lane)
        return lane

    def _load(self, conn: sqlite3.Connection, db: Any, pids: set[int] | None) -> None:
        seen: set[int] = set()
        for record in db.processes(self._run) if self._run else db.processes():
            if record.pid is None or (pids is not None and record.pid not in pids):
                continue
            parent = f"p{record.parent_pid}" if record.parent_pid in seen else None
            seen.add(record.pid)
            lane = self._add(
                Lane(
                    id=f"p{record.pid}",
                    kind="process",
                    label=f"{record.name}:{record.pid}",
                    pid=record.pid,
                    parent=parent,
                    depth=0,
                    start_ns=record.start_ns,
                    end_ns=record.end_ns,
                    error=bool(record.error),
                    end_mark=_end_mark(record),
                )
            )
            lane.span = _run_span_pk(conn, record.run_span_id)
        # Processes that exported spans but have no lifecycle record (no lifecycle
        # instrumentor, or a DB from another exporter): a lane each, at the top level.
        # pids come from the (pid, start_ns) index one at a time: a skip scan, not a
        # DISTINCT over every span. For one run, its processes are the runs API's; a span
        # of another pid still gets a lane when a window shows it (lane_for).
        pid = -(2**63)
        while self._run is None:
            row = conn.execute(
                "SELECT pid, process_name FROM spans WHERE pid > ? ORDER BY pid LIMIT 1", (pid,)
            ).fetchone()
            if row is None:
                break
            pid = int(row[0])
            if pid not in seen and (pids is None or pid in pids):
                seen.add(pid)
                self._add(Lane(f"p{pid}", "process", f"{row[1] or 'process'}:{pid}", pid, None, 0))
        self._load_threads_and_tasks(conn, pids)

    def _load_threads_and_tasks(self, conn: sqlite3.Connection, pids: set[int] | None) -> None:
        rows = conn.execute(
            "SELECT s.span_pk, s.span_id, s.name, s.start_ns, s.end_ns, s.status_code, "
            "s.attributes, s.pid, a.value FROM span_attrs a JOIN spans s ON s.span_pk = a.span_pk "
            "WHERE a.key = ? AND a.value IN ('thread', 'task') AND s.start_ns BETWEEN ? AND ? "
            "ORDER BY s.start_ns",
            (KIND_KEY, *self._between),
        ).fetchall()
        for span_pk, span_id, name, start, end, status, attributes, pid, kind in rows:
            if pids is not None and pid not in pids:
                continue
            attrs = json.loads(attributes or "{}")
            thread_id = attrs.get("thread.id")
            thread_name = attrs.get("thread.name")
            if f"p{pid}" not in self.by_id:
                self._add(Lane(f"p{pid}", "process", str(pid), pid, None, 0))
            if kind == "thread":
                self._add(
                    Lane(
                        id=f"t{pid}.{thread_id}",
                        kind="thread",
                        label=str(thread_name or name.removeprefix("thread ")),
                        pid=pid,
                        parent=f"p{pid}",
                        depth=1,
                        start_ns=start,
                        end_ns=end,
                        span=span_pk,
                        error=status == STATUS_ERROR,
                        thread_id=thread_id,
                    )
                )
            else:
                host = self.thread_lane(pid, thread_id, thread_name)
                label = str(attrs.get("procscope.task.name") or name.removeprefix("task "))
                lane = self._task_slot(host, span_pk, label, start, end, status == STATUS_ERROR)
                self._task_lanes[int(span_id)] = lane.id
                self._task_span_lanes[span_pk] = lane.id

    def _task_slot(
        self, host: str, span_pk: int, label: str, start: int, end: int, error: bool
    ) -> Lane:
        """The task lane a task (in start order) is drawn on: a free one of its thread's,
        a new one while under :data:`MAX_TASK_LANES`, else the one that frees first."""
        slots = self._slots.setdefault(host, [])
        free = [lane for lane in slots if (lane.end_ns or 0) <= start]
        if free or len(slots) >= MAX_TASK_LANES:
            lane = free[0] if free else min(slots, key=lambda lane: lane.end_ns or 0)
            lane.tasks += 1
            lane.label = f"{lane.first_label} (+{lane.tasks - 1} more tasks)"
            lane.end_ns = max(lane.end_ns or 0, end)
            lane.error = lane.error or error
            lane.span = None
            return lane
        lane = self._add(
            Lane(
                id=f"k{span_pk}",
                kind="task",
                label=label,
                pid=self.by_id[host].pid,
                parent=host,
                depth=self.by_id[host].depth + 1,
                start_ns=start,
                end_ns=end,
                span=span_pk,
                error=error,
                first_label=label,
            )
        )
        slots.append(lane)
        return lane

    # ------------------------------------------------------------------ placing spans

    def thread_lane(self, pid: int, thread_id: Any, thread_name: Any) -> str:
        """The lane of a thread of ``pid``: the process's own lane for its main thread."""
        process = f"p{pid}"
        if process not in self.by_id:
            self._add(Lane(process, "process", str(pid), pid, None, 0))
        if thread_id is None or thread_id == pid or thread_name == "MainThread":
            return process
        lane_id = f"t{pid}.{thread_id}"
        if lane_id not in self.by_id:
            self._add(Lane(lane_id, "thread", str(thread_name or thread_id), pid, process, 1))
            self.new_lanes.append(lane_id)
        return lane_id

    def lane_for(
        self, pid: int, attributes: dict[str, Any], parent_span_id: int | None, span_pk: int
    ) -> str:
        """The lane a span is drawn on (a task's own span and the spans it made: its lane)."""
        if span_pk in self._task_span_lanes:
            return self._task_span_lanes[span_pk]
        if parent_span_id is not None and parent_span_id in self._task_lanes:
            return self._task_lanes[parent_span_id]
        if attributes.get(KIND_KEY) in ("process", "subprocess", "program"):
            role = attributes.get("procscope.lifecycle.role")
            if role in ("run", "end"):
                return self.thread_lane(pid, None, None)
        if attributes.get(KIND_KEY) == "thread":
            lane_id = f"t{pid}.{attributes.get('thread.id')}"
            if lane_id in self.by_id:
                return lane_id
        return self.thread_lane(pid, attributes.get("thread.id"), attributes.get("thread.name"))

    def note_task_child(self, span_id: int, lane_id: str) -> None:
        """Spans made inside a task, deeper than its direct children, go on its lane too."""
        if lane_id.startswith("k"):
            self._task_lanes.setdefault(span_id, lane_id)

    def ordered(self) -> list[Lane]:
        """Every lane, depth first: a process, its threads (each with its tasks), then its
        child processes; tasks of the main thread's loop right under the process."""
        out: list[Lane] = []

        def walk(lane: Lane, depth: int) -> None:
            lane.depth = depth
            out.append(lane)
            kids = sorted(
                lane.children,
                key=lambda c: ({"thread": 0, "task": 0, "process": 1}[c.kind], c.start_ns or 0),
            )
            for child in kids:
                walk(child, depth + 1)

        for root in self._roots:
            walk(root, 0)
        return out


def _run_span_pk(conn: sqlite3.Connection, run_span_id: str | None) -> int | None:
    """The span_pk of a process's own ``process`` span (its lane's lifetime bar)."""
    if not run_span_id:
        return None
    value = int(run_span_id, 16)
    stored = value - (1 << 64) if value >= (1 << 63) else value
    row = conn.execute(
        "SELECT s.span_pk FROM span_attrs a JOIN spans s ON s.span_pk = a.span_pk "
        "WHERE a.key = ? AND a.value IN ('process', 'subprocess') AND s.span_id = ?",
        (KIND_KEY, stored),
    ).fetchone()
    return int(row[0]) if row else None
