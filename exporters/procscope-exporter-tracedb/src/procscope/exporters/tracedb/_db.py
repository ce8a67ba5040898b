"""TraceDB: read-only queries over a trace DB, safe while writers are active.

The file is opened read-only (``mode=ro``): a reader can never create, change or lock
out the file. In WAL mode readers see the last committed state at the start of each
query (or of the read transaction a multi-query method opens) and never wait for writers.

A reader creates no file either. SQLite reading a WAL-mode DB wants its -wal and -shm
files and creates them when they are missing (then cannot remove them: they stay, owned
by the reader, and another user's -shm breaks the owner's next run). So:

* the last writer to close a DB switches it back to rollback-journal mode
  (:meth:`Writer.close`), where a read-only reader needs no other file;
* while writers run, their -wal and -shm exist and the reader uses them, read-only;
* a WAL-mode DB without a -wal (its last writer could not switch it back: another
  connection was open, or it was killed) has everything in the main file, and is read as
  immutable (no locks, no files). Should a writer start during that read, the reader may
  see the file as it was when the query began, or, if the writer checkpoints in the
  middle of the query, fail it with "malformed": never harm the file.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import urllib.parse
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from . import _messages, _processes, _query, _runs, _schema, _state, _timeline
from ._fds import on_read_only_fs as _on_read_only_fs
from ._query import Happening, SpanRecord, TraceSummary, TraceTree
from ._runs import Run, RunFilter
from ._schema import TraceDBError


def connect_for_reading(path: str, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open a procscope trace DB read-only, or raise :class:`TraceDBError` saying why."""
    if os.path.isdir(path):
        raise TraceDBError(path, "it is a directory")
    if not os.path.exists(path):
        raise TraceDBError(path, "no such file")
    _schema.check_header(path)
    try:
        conn, marks = _open_read_only(path, busy_timeout_s, immutable=_needs_immutable(path))
    except sqlite3.Error as exc:
        wal = path + "-wal"
        if (os.path.exists(wal) and os.path.getsize(wal) > 0) or not _on_read_only_fs(path):
            raise TraceDBError(path, f"cannot read it ({exc})") from None
        # A WAL-mode DB on a read-only file system, closed cleanly (no WAL left): SQLite
        # cannot create the -shm index it wants, but nothing can change the file either,
        # so it may be read as immutable.
        try:
            conn, marks = _open_read_only(path, busy_timeout_s, immutable=True)
        except sqlite3.Error as exc2:
            raise TraceDBError(path, f"cannot read it ({exc2})") from None
    app_id, version, objects = marks
    try:
        action = _schema.check_marks(path, app_id, version, objects)
    except TraceDBError:
        conn.close()
        raise
    if action == "create":
        conn.close()
        raise TraceDBError(path, "an empty file, not a procscope trace DB (nothing recorded yet?)")
    if action == "migrate" and version < _schema.OLDEST_READABLE_VERSION:
        conn.close()
        raise TraceDBError(
            path,
            f"an older procscope trace DB (schema version {version}); a procscope program "
            "writing to it migrates it to the current version",
        )
    return conn


def _open_read_only(
    path: str, busy_timeout_s: float, *, immutable: bool
) -> tuple[sqlite3.Connection, tuple[int, int, int]]:
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(
        uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        return conn, _schema.read_marks(conn)
    except BaseException:
        conn.close()
        raise


_WAL_FORMAT = 2  # bytes 18-19 of the SQLite header: 1 rollback journal, 2 WAL


def _needs_immutable(path: str) -> bool:
    """True for a WAL-mode DB with no (or an empty) -wal file: reading it normally would
    create -wal and -shm beside it, and everything is in the main file anyway."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    if len(header) < 20 or header[18] != _WAL_FORMAT:
        return False
    try:
        return os.path.getsize(path + "-wal") == 0 and not os.path.exists(path + "-shm")
    except OSError:
        return True  # no -wal file


@dataclasses.dataclass(frozen=True)
class LossRecord:
    """What one process recorded but could not deliver, for one reason (``queue_full``,
    ``exit_flush``, ``export_failed``...; docs/tracedb.md, "Incomplete recordings")."""

    pid: int
    process_start_ns: int
    process_name: str | None
    reason: str
    count: int
    updated_ns: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TraceDB:
    """Queries over one trace DB file (read-only).

    Usable as a context manager. Not shared between threads without a lock of your own
    (one sqlite3 connection).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.conn = connect_for_reading(self.path)
        self._resources: dict[int, dict[str, Any]] = {}

    def close(self) -> None:
        self.conn.close()

    def __del__(self) -> None:
        # A read-only handle holds nothing worth a warning: `TraceDB(path).traces()` is a
        # fine way to ask one question, so close the connection quietly (Python 3.13
        # warns about sqlite3 connections that are collected unclosed).
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 -- interpreter shutdown, closed already...
                pass

    def __enter__(self) -> TraceDB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def runs(self) -> list[Run]:
        """Every recorded run, oldest first (see ``_runs``). Spans recorded without a run
        id (a DB older than schema version 3) make one run, ``"unknown"``."""
        return _runs.runs(self.conn)

    def latest_run_id(self) -> str | None:
        """The id of the run that started last; None when nothing is recorded."""
        return _runs.latest_run_id(self.conn)

    def resolve_run(self, run: str) -> str:
        """The full id of the run whose id is or starts with ``run``; raises
        :class:`UnknownRunError` (a ValueError) if none or several match."""
        return _runs.resolve(self.conn, run).run_id

    def _run(self, run: str | None) -> RunFilter | None:
        """The filter of ``run`` (an id or a unique prefix); None for every run."""
        return None if run is None else _runs.resolve(self.conn, run)

    # ------------------------------------------------------------------ spans and traces

    def spans(
        self,
        *,
        trace_id: str | bytes | int | None = None,
        name: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        pid: int | None = None,
        process_name: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        errors_only: bool = False,
        limit: int | None = None,
        run: str | None = None,
    ) -> list[SpanRecord]:
        """Spans (with events and links) matching every filter given, by start time.

        ``name`` may be a glob (``worker*``); ``start_ns``/``end_ns`` bound the start
        time ([start, end)); ``attributes`` are equalities (indexed keys are fast).
        """
        where, params = _query.span_conditions(
            self.conn,
            trace_id=trace_id,
            name=name,
            start_ns=start_ns,
            end_ns=end_ns,
            pid=pid,
            process_name=process_name,
            attributes=attributes,
            errors_only=errors_only,
            run=self._run(run),
        )
        return _query.fetch_spans(self.conn, where, params, limit=limit)

    def traces(
        self,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        name: str | None = None,
        errors_only: bool = False,
        min_duration_ns: int | None = None,
        attributes: Mapping[str, Any] | None = None,
        limit: int | None = 50,
        offset: int = 0,
        run: str | None = None,
        min_spans: int | None = None,
    ) -> list[TraceSummary]:
        """Traces that started in [start_ns, end_ns), newest first.

        ``name`` is the root span's name (a glob allowed); ``attributes``: some span of
        the trace has each of these attribute values; ``min_spans``: only traces of at
        least that many spans, or with an error.
        """
        return _query.query_traces(
            self.conn,
            start_ns=start_ns,
            end_ns=end_ns,
            name=name,
            errors_only=errors_only,
            min_duration_ns=min_duration_ns,
            attributes=attributes,
            limit=limit,
            offset=offset,
            run=self._run(run),
            min_spans=min_spans,
        )

    def trace_fragments(
        self,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        run: str | None = None,
    ) -> list[_query.FragmentGroup]:
        """One-span traces without an error (of ``run``, started in [start_ns, end_ns)),
        counted by root name, the most numerous first: what ``procscope traces`` sums up
        instead of listing (``traces(min_spans=2)`` lists the rest)."""
        return _query.query_fragments(
            self.conn, start_ns=start_ns, end_ns=end_ns, run=self._run(run)
        )

    def trace(self, trace_id: str | bytes | int, run: str | None = None) -> TraceTree | None:
        """One trace as a tree of spans with their events, or None if not in the DB (or
        not in ``run``)."""
        return _query.query_trace(self.conn, trace_id, self._run(run))

    def find_trace_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Trace ids starting with a hex prefix (for users typing a shortened id)."""
        cleaned = prefix.strip().lower()
        if not cleaned or len(cleaned) > 32 or any(ch not in "0123456789abcdef" for ch in cleaned):
            return []
        low = bytes.fromhex(cleaned.ljust(32, "0"))
        high = bytes.fromhex(cleaned.ljust(32, "f"))
        rows = self.conn.execute(
            "SELECT trace_id FROM traces WHERE trace_id BETWEEN ? AND ? LIMIT ?",
            (low, high, int(limit)),
        )
        return [_schema.trace_id_from_db(row[0]) for row in rows]

    def events_around(
        self, time_ns: int, window_ns: int = 1_000_000_000, run: str | None = None
    ) -> list[Happening]:
        """Span starts, span ends and events within ``window_ns`` either side of
        ``time_ns``, across every process (of ``run``), in time order."""
        return _query.query_events_around(self.conn, time_ns, window_ns, self._run(run))

    def resource(self, resource_id: int | None) -> dict[str, Any]:
        """The resource attributes a span refers to (``SpanRecord.resource_id``)."""
        if resource_id is None:
            return {}
        if resource_id not in self._resources:
            row = self.conn.execute(
                "SELECT attributes FROM resources WHERE resource_id = ?", (resource_id,)
            ).fetchone()
            self._resources[resource_id] = _query.json_object(row[0]) if row else {}
        return self._resources[resource_id]

    def losses(self, run: str | None = None) -> list[LossRecord]:
        """Every process's losses (of ``run``), largest first; empty when the recording is
        complete (or the DB predates the ``losses`` table, schema version 1)."""
        flt = self._run(run)
        where, params = ("", []) if flt is None else _runs.losses_filter(
            flt, _runs.pids_of(self.conn, flt)
        )
        # A flight recording staged and not yet made into spans (_staging.py) counts as
        # its records under the reason "flight_staged" (version 4).
        rows = _runs.loss_rows(
            self.conn, "pid, process_start_ns, process_name, reason, count, updated_ns",
            where, params)
        rows.sort(key=lambda row: (-row[4], row[0], row[3]))
        return [LossRecord(*row) for row in rows]

    def staged_recordings(self, run: str | None = None) -> list[dict[str, Any]]:
        """Flight recordings stored as records and not yet all made into spans (the
        ``flight_staged`` table, version 4; docs/flight-recorder.md), oldest first."""
        flt = self._run(run)
        where, params = "", []
        if flt is not None and not flt.everything:
            where = (" WHERE resource_id IN (SELECT resource_id FROM resources WHERE "
                     + ("run_id IS NULL)" if flt.legacy else "run_id = ?)"))
            params = [] if flt.legacy else [flt.run_id]
        try:
            rows = self.conn.execute(
                "SELECT trace_id, pid, process_name, reason, records, staged_ns "
                "FROM flight_staged" + where + " ORDER BY staged_ns", params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [
            {"trace_id": _schema.trace_id_from_db(trace_id), "pid": pid, "process_name": name,
             "reason": reason, "records": records, "staged_ns": staged_ns}
            for trace_id, pid, name, reason, records, staged_ns in rows
        ]

    def span_count(self, run: str | None = None) -> int:
        flt = self._run(run)
        where, params = ("", []) if flt is None else flt.traces("t")
        row = self.conn.execute(
            "SELECT coalesce(sum(t.span_count), 0) FROM traces t"
            + (f" WHERE {where}" if where else ""),
            params,
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ per instrumentor

    def processes(self, run: str | None = None) -> list[Any]:
        """The process tree (of ``run``), from lifecycle spans (see ``_processes``)."""
        return _processes.processes(self.conn, self._run(run))

    def process_names(self, run: str | None = None) -> dict[int, str]:
        """pid -> the one name of each process of ``run`` (see ``_actors``): what
        ``actor_name`` takes to name a process, a thread or a task everywhere alike."""
        flt = self._run(run)
        return _timeline.all_names(self.conn, _processes.processes(self.conn, flt), flt)

    def timeline(
        self,
        who: str,
        run: str | None = None,
        around: Any = None,
        last: int | None = None,
    ) -> list[_timeline.TimelineEntry]:
        """Everything that happened to one process, thread or task of ``run``, oldest
        first (see ``_timeline``): WHO is ``name``, ``pid``, ``name:pid``, then
        ``/thread`` or ``/task``. ``around`` (epoch ns, seconds or a datetime) keeps the
        entries within 2 s of it; ``last`` the last N. Raises UnknownActorError (a
        ValueError) when WHO names no actor, or several."""
        flt = self._run(run)
        command = None
        if flt is not None:
            command = next((r.command for r in _runs.runs(self.conn) if r.run_id == flt.run_id),
                           None)
        at = None if around is None else _state.to_ns(around)
        return _timeline.timeline(self.conn, who, flt, at, last, command)[1]

    def actor(self, who: str, run: str | None = None) -> str:
        """The full actor name of WHO (as :meth:`timeline` resolves it)."""
        flt = self._run(run)
        names = _timeline.all_names(self.conn, _processes.processes(self.conn, flt), flt)
        return _timeline.resolve_actor(self.conn, who, flt, names).name

    def messages(
        self,
        *,
        queue: str | None = None,
        sender: str | None = None,
        receiver: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
        newest: bool = False,
        run: str | None = None,
    ) -> list[Any]:
        """Messages with their producer and consumer spans, oldest first: the first
        ``limit``, or the last ``limit`` with ``newest`` (see ``_messages``). Each end
        names its process by its one name (``MessageEnd.actor``)."""
        return _messages.messages(
            self.conn,
            queue=queue,
            sender=sender,
            receiver=receiver,
            start_ns=start_ns,
            end_ns=end_ns,
            limit=limit,
            newest=newest,
            run=self._run(run),
            names=self.process_names(run),
        )

    def state_objects(self, run: str | None = None) -> list[str]:
        """The names of the objects whose state was recorded (see ``_state``)."""
        return _state.state_objects(self.conn, self._run(run))

    def state_history(
        self, name: str, pid: int | None = None, run: str | None = None
    ) -> list[_state.StateRecord]:
        """Every snapshot, change and transition of a traced object (see ``_state``)."""
        return _state.state_history(self.conn, name, pid, self._run(run))

    def state_at(
        self, name: str, time: Any, pid: int | None = None, run: str | None = None
    ) -> _state.StateAt | None:
        """A traced object's state at ``time`` (epoch ns, seconds or a datetime), or None
        if nothing of it was recorded by then (see ``_state``)."""
        return _state.state_at(self.conn, name, time, pid, self._run(run))
