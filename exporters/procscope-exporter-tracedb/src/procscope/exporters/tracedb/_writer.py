"""Writing rows into a trace DB: open (create, check, migrate), insert a batch, prune.

Concurrency model: every process (and every exporter) has its own connection. SQLite in
WAL mode lets readers run beside the one writer; writers take turns, each batch being one
``BEGIN IMMEDIATE`` transaction (the write lock is taken up front, so two writers never
deadlock upgrading read locks) waited for with a busy timeout. Because the batch holds the
write lock, it can number its own rows (``max(rowid) + 1...``) and insert events, links and
index rows with ``executemany`` without asking SQLite for each row id.

:class:`Writer` is not thread-safe and never survives a fork: the exporter guards it with
a lock and makes a new one in a child process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from procscope.core import runs
from procscope.core.guard import warn_once

from . import _schema
from ._connect import connect_for_writing
from ._fds import OPENING, file_identity, open_fds, own_fds
from ._forkgate import begin_immediate, end_transaction
from ._run_rows import run_id_of_resource, write_summaries

# json.dumps with compact separators; default=str so an odd value never fails a batch.
_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False
).encode

try:
    # The C encoder that json.dumps builds on every call, built once: half the cost of a
    # span's attributes. No circular-reference markers (attribute values are scalars and
    # tuples of scalars); allow_nan=False since SQLite's JSON functions reject NaN.
    from json.encoder import (  # type: ignore[attr-defined]
        c_make_encoder,
        encode_basestring,
    )

    _c_encode: Any = c_make_encoder(
        None, str, encode_basestring, None, ":", ",", False, False, False
    )
except (ImportError, TypeError):  # another Python implementation, or another signature
    _c_encode = None
_join = "".join

SPAN_INSERT = (
    "INSERT INTO spans (span_pk, trace_id, span_id, parent_span_id, name, kind, start_ns, "
    "end_ns, status_code, status_description, attributes, resource_id, scope_id, pid, "
    "process_name) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
EVENT_INSERT = (
    "INSERT INTO events (event_pk, span_pk, name, time_ns, attributes) VALUES (?,?,?,?,?)"
)
LINK_INSERT = "INSERT INTO links (span_pk, trace_id, span_id, attributes) VALUES (?,?,?,?)"
SPAN_ATTR_INSERT = "INSERT OR IGNORE INTO span_attrs (key, value, span_pk) VALUES (?,?,?)"
# (plain "?" placeholders: numbered ones with a sequence of values warn from Python 3.12
# and are an error from 3.14)
SPAN_ATTR_RANGE_INSERT = (
    "INSERT OR IGNORE INTO span_attrs (key, value, span_pk) SELECT ?, ?, span_pk FROM spans "
    "WHERE span_pk BETWEEN ? AND ?"
)
EVENT_ATTR_INSERT = "INSERT OR IGNORE INTO event_attrs (key, value, event_pk) VALUES (?,?,?)"
# One summary row per trace, merged with what earlier batches (of any process) wrote.
TRACE_UPSERT = (
    "INSERT INTO traces (trace_id, start_ns, end_ns, span_count, error_count, root_name, "
    "root_span_pk) VALUES (?,?,?,?,?,?,?) ON CONFLICT (trace_id) DO UPDATE SET "
    "start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns), "
    "span_count = span_count + excluded.span_count, "
    "error_count = error_count + excluded.error_count, "
    "root_name = coalesce(root_name, excluded.root_name), "
    "root_span_pk = coalesce(root_span_pk, excluded.root_span_pk)"
)

STATUS_ERROR = 2
# Resource and scope objects whose row ids a writer remembers by identity.
_IDS_BY_OBJECT_MAX = 256


@dataclass
class Batch:
    """The rows of one batch. ``span_pk``/``event_pk`` values are offsets from 0 that
    :meth:`Writer.write` shifts to the next free row ids once it holds the write lock."""

    spans: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    links: list[tuple[Any, ...]] = field(default_factory=list)
    span_attrs: list[tuple[Any, ...]] = field(default_factory=list)
    event_attrs: list[tuple[Any, ...]] = field(default_factory=list)
    # The sending process's loss totals (see _schema.LOSS_UPSERT), usually none.
    losses: list[tuple[Any, ...]] = field(default_factory=list)
    # (run id, pid) of the processes whose losses these are: a process that lost every
    # span stored none, so no span row puts it in its run (``run_pids``). Empty: the
    # writing process's run (its children share it).
    loss_runs: list[tuple[str, int]] = field(default_factory=list)
    # (key, value, first span_pk, last span_pk): every span in that range has the key
    # with that value; its index rows are made by SQLite from the spans inserted.
    span_attr_ranges: list[tuple[Any, ...]] = field(default_factory=list)
    # True when the rows carry their final ``span_pk``/``event_pk`` already (built under
    # the write lock from :attr:`Writer.span_base`/``event_base``): not shifted again.
    numbered: bool = False
    # Flight recordings staged (_schema.FLIGHT_STAGE_INSERT rows) and unstaged (their
    # keys), in the same transaction as the batch's spans.
    staged: list[tuple[Any, ...]] = field(default_factory=list)
    unstaged: list[int] = field(default_factory=list)
    # Spans stored for later (_schema.SPAN_BACKLOG_INSERT rows), and the backlog rows
    # whose spans this batch makes into rows (their keys): see _backlog.py.
    backlog: list[tuple[Any, ...]] = field(default_factory=list)
    backlog_done: list[int] = field(default_factory=list)


def encode_attributes(attributes: Any) -> str | None:
    """Attributes as compact JSON text; None when there are none.

    NaN and infinities (not JSON) are stored as the strings "nan", "inf", "-inf".
    """
    if not attributes:
        return None
    plain = attributes if type(attributes) is dict else dict(attributes)
    if _c_encode is not None:
        try:
            return _join(_c_encode(plain, 0))
        except ValueError:
            pass  # a NaN or infinity somewhere
    try:
        return _encode(plain)
    except ValueError:
        return _encode({key: _finite(value) for key, value in plain.items()})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_finite(item) for item in value]
    return value


def digest_of(*parts: Any) -> str:
    # SHA-1 from CPython's own _sha1 when it has it: hashlib loads OpenSSL, about 3-4 ms
    # of the start of whichever process writes the first resource row (the same digest).
    try:
        from _sha1 import sha1
    except ImportError:  # pragma: no cover -- a build without it
        from hashlib import sha1
    return sha1(_encode(parts).encode("utf-8")).hexdigest()


class Writer:
    """One connection writing batches into one DB file (one per process)."""

    # True for a connection the exporter keeps unclosed on purpose (the program closed
    # its descriptors, or a fork child inherited it): see __del__.
    set_aside = False
    _closed = True  # until connected

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_s: float = 5.0,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        retention_interval_s: float = 10.0,
    ) -> None:
        self.path = path
        # With a size limit, the WAL is truncated after checkpoints to a quarter of it
        # (at least 256 KiB), so that the DB and its WAL together stay near the limit.
        wal_limit = 16 * 1024 * 1024
        if max_bytes is not None:
            wal_limit = min(wal_limit, max(max_bytes // 4, 256 * 1024))
        self.pid = os.getpid()
        # One writer opens at a time in a process: own_fds() takes the descriptors that
        # appeared on these files during the open, and another thread's writer opening
        # beside it would have its own taken for ours too (and once that one closed them,
        # this one would be set aside for nothing, its descriptors left open for good).
        with OPENING:
            before = open_fds()
            self.conn = connect_for_writing(path, busy_timeout_s, wal_limit)
            self._closed = False
            # SQLite opened the DB, its -wal and its -shm (WAL mode is set on connecting).
            # A program may close those descriptors (os.closerange in a child, a double
            # close) and get their numbers for files of its own: SQLite reports no error
            # then, and would write our pages into the program's files. fds_intact()
            # checks them.
            self.fds = own_fds(before, path)
        self.identity = file_identity(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.retention_interval_s = retention_interval_s
        self._next_retention = 0.0  # check on the first batch
        self._resource_ids: dict[str, int] = {}
        self._run_ids: dict[int, str | None] = {}  # resource row id -> its run id
        self._scope_ids: dict[str, int] = {}
        # Ids by the resource or scope object itself (kept referenced, so its id() is
        # never reused): a batch alternates between a few scopes (messaging, state,
        # lifecycle), and each key is a JSON encoding and a SHA-1.
        self._ids_by_object: dict[int, tuple[Any, int]] = {}
        self._pending_resources: list[tuple[Any, ...]] = []
        self._pending_scopes: list[tuple[Any, ...]] = []
        # The first free span_pk and event_pk of the batch being written (see write()).
        self.span_base = self.event_base = 1

    def fds_intact(self) -> bool:
        """True while every descriptor SQLite opened for us still refers to our files
        (one fstat each: three per batch)."""
        for fd, identity in self.fds.items():
            try:
                info = os.fstat(fd)
            except OSError:
                return False
            if (info.st_dev, info.st_ino) != identity:
                return False
        return True

    def close(self) -> None:
        """Close, leaving the file in rollback-journal mode when this is its last
        connection, so that readers need no -wal/-shm files (see _db.py)."""
        conn = self.conn
        self._closed = True
        try:
            # SQLite changes the mode only when no other connection has the file open
            # (it needs the exclusive lock): with writers still running it refuses at
            # once (no busy wait), and the file stays in WAL mode for them.
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error:
            pass
        conn.close()

    def __del__(self) -> None:
        # An exporter dropped without shutdown(), its writer with it at some later garbage
        # collection: close as shutdown() would. Left to the connection's own collection,
        # the file stays in WAL mode and Python 3.13 warns "unclosed database" in whatever
        # code runs then. Never a connection set aside, nor a parent's in a fork child:
        # its descriptors may be the program's now, or its WAL files the parent's.
        if self._closed or self.set_aside or self.pid != os.getpid():
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- interpreter shutdown, say: nothing to report to
            pass

    # ------------------------------------------------------------------ ids of shared rows

    @staticmethod
    def resource_key(resource: Any) -> tuple[str, str | None]:
        """(attributes as JSON, schema URL): what identifies a resource's row."""
        attributes = _encode(dict(resource.attributes))
        return attributes, getattr(resource, "schema_url", None) or None

    @staticmethod
    def scope_key(scope: Any) -> tuple[str, str | None, str | None, str | None]:
        """(name, version, schema URL, attributes as JSON) of an instrumentation scope."""
        return (
            scope.name or "",
            scope.version or None,
            scope.schema_url or None,
            encode_attributes(getattr(scope, "attributes", None)),
        )

    def resource_id(self, resource: Any) -> int | None:
        """The row id of a resource, inserted once per DB (looked up by its digest)."""
        if resource is None:
            return None
        known = self._ids_by_object.get(id(resource))
        if known is not None and known[0] is resource:
            return known[1]
        rid = self.resource_id_of(*self.resource_key(resource))
        self._remember(resource, rid)
        return rid

    def _remember(self, item: Any, row_id: int) -> None:
        if len(self._ids_by_object) >= _IDS_BY_OBJECT_MAX:
            self._ids_by_object.clear()  # a program making resources or scopes on the fly
        self._ids_by_object[id(item)] = (item, row_id)

    def resource_id_of(self, attributes: str, schema_url: str | None) -> int:
        digest = digest_of(attributes, schema_url)
        rid = self._resource_ids.get(digest)
        if rid is None:
            run_id = run_id_of_resource(attributes)
            self.conn.execute(
                "INSERT OR IGNORE INTO resources (digest, attributes, schema_url, run_id) "
                "VALUES (?,?,?,?)",
                (digest, attributes, schema_url, run_id),
            )
            rid = self.conn.execute(
                "SELECT resource_id FROM resources WHERE digest = ?", (digest,)
            ).fetchone()[0]
            self._resource_ids[digest] = rid
            self._run_ids[rid] = run_id
        return rid  # type: ignore[no-any-return]

    def know_resource(self, rid: int | None) -> None:
        """Learn the run of a resource row another process stored (under the write
        lock): the batch's summaries count its spans in that run."""
        if rid is not None and rid not in self._run_ids:
            row = self.conn.execute(
                "SELECT run_id FROM resources WHERE resource_id = ?", (rid,)).fetchone()
            self._run_ids[rid] = row[0] if row else None

    def scope_id(self, scope: Any) -> int | None:
        if scope is None:
            return None
        known = self._ids_by_object.get(id(scope))
        if known is not None and known[0] is scope:
            return known[1]
        sid = self.scope_id_of(*self.scope_key(scope))
        self._remember(scope, sid)
        return sid

    def scope_id_of(
        self, name: str, version: str | None, schema_url: str | None, attributes: str | None
    ) -> int:
        digest = digest_of(name, version, schema_url, attributes)
        sid = self._scope_ids.get(digest)
        if sid is None:
            self.conn.execute(
                "INSERT OR IGNORE INTO scopes (digest, name, version, schema_url, attributes) "
                "VALUES (?,?,?,?,?)",
                (digest, name, version, schema_url, attributes),
            )
            sid = self.conn.execute(
                "SELECT scope_id FROM scopes WHERE digest = ?", (digest,)
            ).fetchone()[0]
            self._scope_ids[digest] = sid
        return sid  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ writing

    def write(self, batch: Batch, *, build: Any = None, skip_stored: bool = False) -> None:
        """Insert one batch in one IMMEDIATE transaction.

        ``build``, if given, is called under the write lock (after ``BEGIN``) and returns
        the batch; it lets the exporter look up resource and scope ids inside the same
        transaction as the spans that use them. ``skip_stored``: leave out the spans
        (with their events, links and index rows) already in the DB, for a batch that
        the relay's owner may have stored before it died (see _relay.py).
        """
        conn = self.conn
        begin_immediate(conn)
        try:
            # The next free row ids, read under the write lock (no other writer can take
            # them before the commit): ``build`` may number its rows from them.
            span_base = self.span_base = conn.execute(
                "SELECT coalesce(max(span_pk), 0) + 1 FROM spans").fetchone()[0]
            event_base = self.event_base = conn.execute(
                "SELECT coalesce(max(event_pk), 0) + 1 FROM events").fetchone()[0]
            if build is not None:
                batch = build()
            if skip_stored:
                batch = without_stored_spans(conn, batch)
            if batch.numbered:
                spans = batch.spans
                events, links = batch.events, batch.links
                span_attrs, event_attrs = batch.span_attrs, batch.event_attrs
                ranges = batch.span_attr_ranges
            else:
                spans = [(row[0] + span_base, *row[1:]) for row in batch.spans]
                events = [(e[0] + event_base, e[1] + span_base, *e[2:]) for e in batch.events]
                links = [(r[0] + span_base, *r[1:]) for r in batch.links]
                span_attrs = [(k, v, pk + span_base) for k, v, pk in batch.span_attrs]
                event_attrs = [(k, v, pk + event_base) for k, v, pk in batch.event_attrs]
                ranges = [(k, v, a + span_base, b + span_base)
                          for k, v, a, b in batch.span_attr_ranges]  # fmt: skip
            if batch.numbered:
                insert_spans(conn, spans)
            else:
                conn.executemany(SPAN_INSERT, spans)
            if events:
                conn.executemany(EVENT_INSERT, events)
            if links:
                conn.executemany(LINK_INSERT, links)
            if span_attrs:
                conn.executemany(SPAN_ATTR_INSERT, span_attrs)
            if ranges:
                # (A span of the range left out as stored already is not in ``spans``'
                # new rows, so it gets no second index row.)
                conn.executemany(SPAN_ATTR_RANGE_INSERT, ranges)
            if event_attrs:
                conn.executemany(EVENT_ATTR_INSERT, event_attrs)
            write_summaries(conn, spans, summarise_traces(spans), self._run_ids)
            if batch.losses:
                conn.executemany(_schema.LOSS_UPSERT, batch.losses)
                conn.executemany(_schema.RUN_PID_INSERT, batch.loss_runs or _loss_runs(batch))
            if batch.staged:
                conn.executemany(_schema.FLIGHT_STAGE_INSERT, batch.staged)
            if batch.unstaged:
                conn.executemany(_schema.FLIGHT_UNSTAGE, [(key,) for key in batch.unstaged])
            if batch.backlog:
                conn.executemany(_schema.SPAN_BACKLOG_INSERT, batch.backlog)
            if batch.backlog_done:
                conn.executemany(_schema.SPAN_BACKLOG_DONE, [(k,) for k in batch.backlog_done])
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            end_transaction()
        if self.max_bytes is not None or self.max_age_s is not None:
            now = time.monotonic()
            if now >= self._next_retention:
                self._next_retention = now + self.retention_interval_s
                try:
                    self.enforce_retention()
                except sqlite3.Error as exc:
                    # The batch is committed: a prune that fails (locked, say) is retried
                    # at the next interval and must not turn this export into a failure.
                    warn_once(
                        f"tracedb-retention:{self.path}:{exc}",
                        "procscope: pruning the trace DB %s failed (%s); will retry "
                        "(reported once)",
                        self.path,
                        exc,
                    )

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone already (SQLite rolled it back itself)
        # Ids looked up inside a rolled back transaction may not exist: forget them.
        self._resource_ids.clear()
        self._run_ids.clear()
        self._scope_ids.clear()
        self._ids_by_object.clear()

    # ------------------------------------------------------------------ retention

    def enforce_retention(self) -> int:
        """Delete whole traces, oldest first, past ``max_age_s`` or beyond ``max_bytes``.

        Returns the number of traces deleted.
        """
        from ._retention import prune

        return prune(self.conn, max_bytes=self.max_bytes, max_age_s=self.max_age_s)


def without_stored_spans(conn: sqlite3.Connection, batch: Batch) -> Batch:
    """``batch`` less the spans whose (trace id, span id) the DB holds already.

    Only a batch handed back by a relay that did not acknowledge it takes this path, so
    the look-ups (one indexed query per trace) stay off the normal write path.
    """
    stored: set[tuple[bytes, int]] = set()
    for trace_id in {row[1] for row in batch.spans}:
        rows = conn.execute("SELECT span_id FROM spans WHERE trace_id = ?", (trace_id,))
        stored.update((trace_id, span_id) for (span_id,) in rows)
    if not stored:
        return batch
    dropped = {row[0] for row in batch.spans if (row[1], row[2]) in stored}
    events = [e for e in batch.events if e[1] not in dropped]
    kept_events = {e[0] for e in events}
    return Batch(
        spans=[row for row in batch.spans if row[0] not in dropped],
        events=events,
        links=[row for row in batch.links if row[0] not in dropped],
        span_attrs=[row for row in batch.span_attrs if row[2] not in dropped],
        event_attrs=[row for row in batch.event_attrs if row[2] in kept_events],
        losses=batch.losses,
        span_attr_ranges=batch.span_attr_ranges,
        numbered=batch.numbered,
        staged=batch.staged,
        unstaged=batch.unstaged,
    )


# Span columns a large batch's rows may all share (trace id, parent, kind, status, its
# description, resource, scope, pid, process name): written into the statement, not
# bound a row.
_SHARED_COLUMNS = (1, 3, 5, 8, 9, 11, 12, 13, 14)
_SPAN_COLUMNS = SPAN_INSERT[SPAN_INSERT.index("(") : SPAN_INSERT.index(")") + 1]
SHARED_MIN_SPANS = 64


def insert_spans(conn: sqlite3.Connection, spans: Sequence[tuple[Any, ...]]) -> None:
    """Insert span rows; the columns every row of a large batch shares (a flight dump's
    trace id, parent, resource, pid...) go into the statement as literals, the others
    are bound: a fifth less of SQLite's time on a dump's span rows (fewer values bound)."""
    literals: dict[int, str] = {}
    if len(spans) >= SHARED_MIN_SPANS:
        for column in _SHARED_COLUMNS:
            values = set(map(itemgetter(column), spans))
            if len(values) == 1:
                literal = _literal(values.pop())
                if literal is not None:
                    literals[column] = literal
    if not literals:
        conn.executemany(SPAN_INSERT, spans)
        return
    varying = [column for column in range(15) if column not in literals]
    # Plain "?" placeholders, bound in column order (numbered ones with a sequence of
    # values warn from Python 3.12 and are an error from 3.14).
    values_sql = ",".join(literals.get(column) or "?" for column in range(15))
    rows = map(itemgetter(*varying), spans) if len(varying) > 1 else (
        (span[varying[0]],) for span in spans)
    conn.executemany(f"INSERT INTO spans {_SPAN_COLUMNS} VALUES ({values_sql})", rows)


def _literal(value: Any) -> str | None:
    """``value`` as an SQL literal, for the types that have an exact one: NULL, an int
    (the columns are INTEGER), a blob, a printable string (quotes doubled); else None
    (bound instead)."""
    if value is None:
        return "NULL"
    if type(value) is int and -(2**63) <= value < 2**63:
        return str(value)
    if type(value) is bytes:
        return f"X'{value.hex()}'"
    if type(value) is str and value.isprintable():  # (no NUL, no lone surrogate)
        return "'" + value.replace("'", "''") + "'"
    return None


def summarise_traces(spans: Sequence[tuple[Any, ...]]) -> Iterable[tuple[Any, ...]]:
    """Per trace in a batch of span rows: (trace_id, start, end, count, errors, root name,
    root span_pk), merged into ``traces`` by :data:`TRACE_UPSERT`."""
    summary: dict[bytes, list[Any]] = {}
    for row in spans:
        # row: span_pk, trace_id, span_id, parent, name, kind, start, end, status, ...
        entry = summary.get(row[1])
        is_root = row[3] is None
        if entry is None:
            summary[row[1]] = [
                row[1],
                row[6],
                row[7],
                1,
                1 if row[8] == STATUS_ERROR else 0,
                row[4] if is_root else None,
                row[0] if is_root else None,
            ]
            continue
        if row[6] < entry[1]:
            entry[1] = row[6]
        if row[7] > entry[2]:
            entry[2] = row[7]
        entry[3] += 1
        if row[8] == STATUS_ERROR:
            entry[4] += 1
        if is_root and entry[5] is None:
            entry[5] = row[4]
            entry[6] = row[0]
    return [tuple(entry) for entry in summary.values()]


def _loss_runs(batch: Batch) -> list[tuple[str, int]]:
    """The writing process's run for each process of ``batch.losses`` (see Batch)."""
    run = runs.current_id()
    return [] if run is None else sorted({(run, int(row[0])) for row in batch.losses})
