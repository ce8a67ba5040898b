"""The trace DB's schema: tables, indexes, version check, and id conversions.

One SQLite file holds every span of a (multi-process) program. Layout, and why:

* ``spans``: one row per span. Trace ids are 16-byte BLOBs and span ids signed 64-bit
  INTEGERs (SQLite has no unsigned type): half the bytes of hex text, in the table and in
  its indexes. Use :func:`trace_id_to_db`, :func:`span_id_to_db` and their inverses.
  Attributes are one JSON text (NULL when empty). ``pid``/``process_name`` are those of the
  process that EXPORTED the span (after a fork the resource's ``process.pid`` is stale).
* ``resources`` and ``scopes``: stored once each, referenced by id from every span.
* ``events`` and ``links``: own tables, keyed by the span's ``span_pk``.
* ``span_attrs`` / ``event_attrs``: side tables filled at insert time for the attribute
  keys in :data:`INDEXED_SPAN_ATTRIBUTES` / :data:`INDEXED_EVENT_ATTRIBUTES` only, so that
  "spans where key = value" is an index seek instead of a JSON scan of a million rows.
  The rows are the primary key of a WITHOUT ROWID table (key, value, span_pk): one
  B-tree, no second index. Pruning finds the rows of deleted spans from the spans' own
  attributes (exact primary-key deletes).
* ``traces``: one summary row per trace (first start, last end, span and error counts, root
  span), kept up to date by every batch with an UPSERT, so that a page of traces is an
  index range scan instead of a GROUP BY over every span.
* ``losses`` (version 2): what each process recorded but could not deliver, by reason
  (one row per process and reason, identified by pid and start time; counts only grow,
  :data:`LOSS_UPSERT`). Any row means the recording is incomplete (docs/tracedb.md).
* runs (version 3): ``resources.run_id`` (the resource's ``procscope.run.id``) and
  ``traces.run_id`` (the run of the trace's first stored batch), both indexed; ``runs``,
  one row per run kept up to date by every batch (first start, last end, span and error
  counts, :data:`RUN_UPSERT`), and ``run_pids``, the pids that stored spans in each run.
  "Spans of run R" is then the run's time range on the start-time index, checked against
  the run's few resource ids. Rows of older versions (no run id) make one run of their own.
* ``flight_staged`` (version 4): flight recordings (docs/flight-recorder.md) stored as
  one compact row each (the records, ``marshal``-encoded) the moment they are dumped, and
  removed once their spans are stored: what a process that dies meanwhile leaves for its
  parent to make into spans. A row means a recording whose spans are not all stored yet.
* ``span_backlog`` (version 5): spans stored but not yet made into rows. Under a burst the
  recorder's batches are stored as one compact row each (the plain spans, ``marshal``-
  encoded and compressed, with their resource and scope ids) and made into the rows
  above when the writing program is idle or ends (_backlog.py): the same rows, later.
  A row means spans that queries do not show yet.

The file is marked with ``PRAGMA application_id`` (so a foreign SQLite file is recognised
and never written to) and ``PRAGMA user_version`` (the schema version).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping

__all__ = [
    "APPLICATION_ID",
    "INDEXED_EVENT_ATTRIBUTES",
    "INDEXED_SPAN_ATTRIBUTES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TraceDBError",
    "span_id_from_db",
    "span_id_to_db",
    "trace_id_from_db",
    "trace_id_to_db",
]

#: 'pscp' as a big-endian int32: marks the file as a procscope trace DB.
APPLICATION_ID = 0x70736370

#: The schema version written into ``PRAGMA user_version``.
SCHEMA_VERSION = 5
#: The oldest version readers read as it is: each later version only added tables and
#: columns, which a reader treats as empty when absent (a reader never migrates).
OLDEST_READABLE_VERSION = 1

#: Attribute keys of spans that get an (key, value) index row in ``span_attrs``.
#: Other packages may append keys at import time (before the first export).
INDEXED_SPAN_ATTRIBUTES: tuple[str, ...] = (
    "messaging.destination.name",
    "messaging.message.id",
    "procscope.lifecycle.kind",
    "process.pid",
    "procscope.state.object",
)

#: Attribute keys of span events that get an index row in ``event_attrs``.
INDEXED_EVENT_ATTRIBUTES: tuple[str, ...] = ("procscope.state.object", "procscope.state.epoch")


def index_attributes(span_keys: tuple[str, ...] = (), event_keys: tuple[str, ...] = ()) -> None:
    """Index more attribute keys (call before the first export of the process).

    The writer reads the two tuples above at every batch, so rebinding them here (or
    appending to their literal in this file) is all it takes.
    """
    global INDEXED_SPAN_ATTRIBUTES, INDEXED_EVENT_ATTRIBUTES
    INDEXED_SPAN_ATTRIBUTES += tuple(k for k in span_keys if k not in INDEXED_SPAN_ATTRIBUTES)
    INDEXED_EVENT_ATTRIBUTES += tuple(k for k in event_keys if k not in INDEXED_EVENT_ATTRIBUTES)


SQLITE_HEADER = b"SQLite format 3\x00"

# Tables first, indexes after: the benchmark's ceiling builds the same tables.
TABLES: tuple[str, ...] = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT
    ) WITHOUT ROWID""",
    """CREATE TABLE resources (
        resource_id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        attributes TEXT NOT NULL,
        schema_url TEXT
    )""",
    """CREATE TABLE scopes (
        scope_id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        version TEXT,
        schema_url TEXT,
        attributes TEXT
    )""",
    """CREATE TABLE spans (
        span_pk INTEGER PRIMARY KEY,
        trace_id BLOB NOT NULL,
        span_id INTEGER NOT NULL,
        parent_span_id INTEGER,
        name TEXT NOT NULL,
        kind INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        status_code INTEGER NOT NULL,
        status_description TEXT,
        attributes TEXT,
        resource_id INTEGER,
        scope_id INTEGER,
        pid INTEGER NOT NULL,
        process_name TEXT
    )""",
    """CREATE TABLE events (
        event_pk INTEGER PRIMARY KEY,
        span_pk INTEGER NOT NULL,
        name TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        attributes TEXT
    )""",
    """CREATE TABLE links (
        span_pk INTEGER NOT NULL,
        trace_id BLOB NOT NULL,
        span_id INTEGER NOT NULL,
        attributes TEXT
    )""",
    """CREATE TABLE span_attrs (
        key TEXT NOT NULL,
        value,
        span_pk INTEGER NOT NULL,
        PRIMARY KEY (key, value, span_pk)
    ) WITHOUT ROWID""",
    """CREATE TABLE event_attrs (
        key TEXT NOT NULL,
        value,
        event_pk INTEGER NOT NULL,
        PRIMARY KEY (key, value, event_pk)
    ) WITHOUT ROWID""",
    """CREATE TABLE traces (
        trace_id BLOB PRIMARY KEY,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        span_count INTEGER NOT NULL,
        error_count INTEGER NOT NULL,
        root_name TEXT,
        root_span_pk INTEGER
    ) WITHOUT ROWID""",
)

LOSSES_TABLE = """CREATE TABLE losses (
        pid INTEGER NOT NULL,
        process_start_ns INTEGER NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL,
        process_name TEXT,
        PRIMARY KEY (pid, process_start_ns, reason)
    ) WITHOUT ROWID"""
TABLES += (LOSSES_TABLE,)

#: A process's running total for one reason: sent again with later batches (and by a
#: child through the relay), so a count never goes down, whatever order rows arrive in.
LOSS_UPSERT = (
    "INSERT INTO losses (pid, process_start_ns, reason, count, updated_ns, process_name) "
    "VALUES (?,?,?,?,?,?) ON CONFLICT (pid, process_start_ns, reason) DO UPDATE SET "
    "count = max(count, excluded.count), updated_ns = max(updated_ns, excluded.updated_ns), "
    "process_name = coalesce(process_name, excluded.process_name)"
)

#: What version 3 added, for a new file and for the migration from version 2 alike.
RUN_STATEMENTS: tuple[str, ...] = (
    "ALTER TABLE resources ADD COLUMN run_id TEXT",
    "ALTER TABLE traces ADD COLUMN run_id TEXT",
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        span_count INTEGER NOT NULL,
        error_count INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE run_pids (
        run_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        PRIMARY KEY (run_id, pid)
    ) WITHOUT ROWID""",
    "CREATE INDEX resources_run ON resources (run_id)",
    "CREATE INDEX traces_run ON traces (run_id, start_ns)",
    "CREATE INDEX runs_start ON runs (start_ns)",
)

#: What version 4 added (a new file and the migration from version 3 alike). ``staged_key``
#: is chosen by the process that stages the recording (its spans' ids derive from it).
FLIGHT_STAGED_TABLE = """CREATE TABLE flight_staged (
        staged_key INTEGER PRIMARY KEY,
        pid INTEGER NOT NULL,
        process_name TEXT,
        trace_id BLOB NOT NULL,
        reason TEXT NOT NULL,
        records INTEGER NOT NULL,
        staged_ns INTEGER NOT NULL,
        resource_id INTEGER,
        scope_id INTEGER,
        body BLOB NOT NULL
    )"""
FLIGHT_STAGE_INSERT = (
    "INSERT OR REPLACE INTO flight_staged (staged_key, pid, process_name, trace_id, reason, "
    "records, staged_ns, resource_id, scope_id, body) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
FLIGHT_UNSTAGE = "DELETE FROM flight_staged WHERE staged_key = ?"

#: What version 5 added (a new file and the migration from version 4 alike): spans stored
#: before their rows are made (see _backlog.py).
SPAN_BACKLOG_TABLE = """CREATE TABLE span_backlog (
        batch_pk INTEGER PRIMARY KEY,
        pid INTEGER NOT NULL,
        process_name TEXT,
        spans INTEGER NOT NULL,
        stored_ns INTEGER NOT NULL,
        body BLOB NOT NULL
    )"""
SPAN_BACKLOG_INSERT = (
    "INSERT INTO span_backlog (pid, process_name, spans, stored_ns, body) VALUES (?,?,?,?,?)"
)
SPAN_BACKLOG_DONE = "DELETE FROM span_backlog WHERE batch_pk = ?"

#: One batch's spans of one run, merged into its row (any process, any order).
RUN_UPSERT = (
    "INSERT INTO runs (run_id, start_ns, end_ns, span_count, error_count) VALUES (?,?,?,?,?) "
    "ON CONFLICT (run_id) DO UPDATE SET start_ns = min(start_ns, excluded.start_ns), "
    "end_ns = max(end_ns, excluded.end_ns), span_count = span_count + excluded.span_count, "
    "error_count = error_count + excluded.error_count"
)
RUN_PID_INSERT = "INSERT OR IGNORE INTO run_pids (run_id, pid) VALUES (?,?)"

INDEXES = (
    "CREATE INDEX spans_trace ON spans (trace_id)",
    "CREATE INDEX spans_start ON spans (start_ns)",
    "CREATE INDEX spans_end ON spans (end_ns)",
    "CREATE INDEX spans_pid ON spans (pid, start_ns)",
    "CREATE INDEX events_span ON events (span_pk)",
    "CREATE INDEX events_time ON events (time_ns)",
    "CREATE INDEX links_span ON links (span_pk)",
    "CREATE INDEX links_target ON links (trace_id, span_id)",
    "CREATE INDEX traces_start ON traces (start_ns)",
    "CREATE INDEX traces_root_name ON traces (root_name, start_ns)",
)


class TraceDBError(Exception):
    """A trace DB cannot be used: missing, not SQLite, not procscope's, wrong version...

    ``str(error)`` is one line that names the file and the reason.
    """

    def __init__(
        self, path: str, reason: str, *, permanent: bool = True, elsewhere: bool = False
    ) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        # permanent: retrying will not help (foreign file, newer schema); the exporter
        # then stops trying instead of failing slowly on every batch.
        self.permanent = permanent
        # elsewhere: a file that must not be written (others may write it, or it is
        # damaged): the exporter writes to a fresh file beside it instead.
        self.elsewhere = elsewhere


#: Migrations by the version they upgrade FROM; each runs inside the write transaction
#: and must leave the schema at version + 1.
Migration = Callable[[sqlite3.Connection], None]


def _add_losses_table(conn: sqlite3.Connection) -> None:
    conn.execute(LOSSES_TABLE)


def _add_runs(conn: sqlite3.Connection) -> None:
    for statement in RUN_STATEMENTS:
        conn.execute(statement)


def _add_flight_staged(conn: sqlite3.Connection) -> None:
    conn.execute(FLIGHT_STAGED_TABLE)


def _add_span_backlog(conn: sqlite3.Connection) -> None:
    conn.execute(SPAN_BACKLOG_TABLE)


MIGRATIONS: dict[int, Migration] = {
    1: _add_losses_table, 2: _add_runs, 3: _add_flight_staged, 4: _add_span_backlog,
}


def trace_id_to_db(trace_id: int) -> bytes:
    return trace_id.to_bytes(16, "big")


def trace_id_from_db(value: bytes) -> str:
    """The 32-hex-digit form used everywhere users see trace ids."""
    return value.hex()


def span_id_to_db(span_id: int) -> int:
    return span_id - 0x10000000000000000 if span_id >= 0x8000000000000000 else span_id


def span_id_from_db(value: int | None) -> str | None:
    """The 16-hex-digit form of a stored span id (None stays None)."""
    if value is None:
        return None
    return format(value & 0xFFFFFFFFFFFFFFFF, "016x")


def parse_trace_id(text: str | bytes | int) -> bytes:
    """A trace id given by a user (hex text, int or raw bytes) as stored."""
    if isinstance(text, bytes):
        return text
    if isinstance(text, int):
        return trace_id_to_db(text)
    cleaned = text.strip().lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if len(cleaned) != 32:
        raise ValueError(f"a trace id has 32 hex digits, not {len(cleaned)}: {text!r}")
    return bytes.fromhex(cleaned)


def check_header(path: str) -> None:
    """Refuse a non-empty file that is not SQLite, before SQLite ever touches it.

    Read again a few times before refusing: another process may be writing the first page
    of a DB it is creating at this very moment (processes racing to create one file)."""
    for attempt in range(HEADER_READS):
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            raise TraceDBError(path, "no such file") from None
        except IsADirectoryError:
            raise TraceDBError(path, "it is a directory") from None
        except OSError as exc:
            raise TraceDBError(path, f"cannot read it ({exc.strerror})", permanent=False) from None
        if not head or head == SQLITE_HEADER:
            return
        if attempt + 1 < HEADER_READS:
            time.sleep(HEADER_RETRY_S)
    raise TraceDBError(path, "not a SQLite file (left untouched)")


HEADER_READS = 4
HEADER_RETRY_S = 0.02


def read_marks(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(application_id, user_version, number of schema objects) of an open file.

    Read in ONE snapshot: three separate autocommit reads could straddle another
    process's schema creation (objects already there, application_id read before) and
    take a fresh procscope DB for a foreign file.
    """
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    finally:
        if own_transaction:
            conn.execute("COMMIT")
    return int(app_id), int(version), int(objects)


def check_marks(
    path: str,
    app_id: int,
    version: int,
    objects: int,
    *,
    current: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
) -> str:
    """What to do with a file: ``"create"``, ``"ok"`` or ``"migrate"``; else refuse."""
    # Looked up at call time (not bound as defaults) so that a later release's
    # SCHEMA_VERSION and MIGRATIONS are the ones used.
    current = SCHEMA_VERSION if current is None else current
    migrations = MIGRATIONS if migrations is None else migrations
    if app_id == 0 and objects == 0:
        return "create"
    if app_id != APPLICATION_ID:
        raise TraceDBError(path, "a SQLite file, but not a procscope trace DB (left untouched)")
    if version > current:
        raise TraceDBError(
            path,
            f"made by a newer procscope (schema version {version}; this procscope reads "
            f"up to {current}): upgrade procscope",
        )
    if version < current:
        missing = [v for v in range(version, current) if v not in migrations]
        if missing:
            raise TraceDBError(
                path,
                f"an old procscope trace DB (schema version {version}) that this procscope "
                f"cannot migrate to version {current}: move it away to start a new one",
            )
        return "migrate"
    return "ok"


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table and index; the caller holds the write transaction."""
    for statement in (*TABLES, *INDEXES, *RUN_STATEMENTS, FLIGHT_STAGED_TABLE,
                      SPAN_BACKLOG_TABLE):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('created_by', ?), ('created_pid', ?)",
        ("procscope", str(os.getpid())),
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")


def migrate(
    conn: sqlite3.Connection,
    version: int,
    *,
    current: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
) -> None:
    """Run the migrations from ``version`` up to ``current``; the caller holds the
    write transaction, so a failed migration leaves the file as it was."""
    current = SCHEMA_VERSION if current is None else current
    migrations = MIGRATIONS if migrations is None else migrations
    while version < current:
        migrations[version](conn)
        version += 1
        conn.execute(f"PRAGMA user_version = {version}")


_INDEXED_META = (
    ("indexed_span_attributes", "INDEXED_SPAN_ATTRIBUTES"),
    ("indexed_event_attributes", "INDEXED_EVENT_ATTRIBUTES"),
)


def record_indexed_keys(conn: sqlite3.Connection) -> None:
    """Add this process's indexed attribute keys to the file's list (writers only).

    Readers use the side tables only for keys some writer indexed: a reader process
    need not have imported the package that appended a key.
    """
    for meta_key, constant in _INDEXED_META:
        keys: tuple[str, ...] = globals()[constant]
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (meta_key,)).fetchone()
        known: list[str] = json.loads(row[0]) if row else []
        merged = known + [key for key in keys if key not in known]
        if merged != known:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (meta_key, json.dumps(merged)),
            )


def indexed_keys(conn: sqlite3.Connection) -> tuple[frozenset[str], frozenset[str]]:
    """(span keys, event keys) that writers of this file index in the side tables."""
    found = []
    for meta_key, _constant in _INDEXED_META:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (meta_key,)).fetchone()
        found.append(frozenset(json.loads(row[0])) if row else frozenset())
    return found[0], found[1]
