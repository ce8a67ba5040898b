"""The schema and query tools: SQL over the trace DB, read-only by four locks.

query() runs on its own connection that can only read:

1. the file is opened read-only (``mode=ro``, as every reader of the DB is);
2. ``PRAGMA query_only``: SQLite refuses any statement that would write;
3. an authorizer allows reading and functions only: no INSERT, UPDATE, DELETE, CREATE,
   DROP, ALTER, ATTACH, DETACH, transactions, or PRAGMA other than a few read-only
   table-description ones (so no ``PRAGMA query_only = 0`` or ``writable_schema``);
4. one statement per call (sqlite3 refuses more), and its rows and time are bounded.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ._reader import Reader
from ._shape import clip, encode, left_out
from ._spec import Param, Tool, ToolInputError

MAX_ROWS = 200
QUERY_SECONDS = 2.0
CELL_CHARS = 300
_READ_ONLY_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_ALLOWED.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))  # WITH RECURSIVE (Python >= 3.11 names it)


def _authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    # These only describe a table or index, whatever their argument (arg2: the table).
    if action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_ONLY_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def read_only_connection(path: str) -> sqlite3.Connection:
    """A connection to the trace DB that cannot write, whatever SQL it is given."""
    from procscope.exporters.tracedb._db import connect_for_reading

    conn = connect_for_reading(path)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_authorize)
    return conn


def _cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()  # trace ids are 16-byte BLOBs
    return clip(value, CELL_CHARS)


def query(reader: Reader, sql: str) -> dict[str, Any]:
    reader.db()  # the same checks and errors as every tool (missing file, not a trace DB)
    if not sql.strip():
        raise ToolInputError("sql: expected one SELECT statement (schema shows the tables)")
    conn = read_only_connection(reader.path)
    stop_at = time.monotonic() + QUERY_SECONDS
    conn.set_progress_handler(lambda: 1 if time.monotonic() > stop_at else 0, 10_000)
    try:
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchmany(MAX_ROWS + 1)
    except sqlite3.Warning as exc:  # "You can only execute one statement at a time."
        raise ToolInputError(f"sql: {exc} Send one statement per call.") from None
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "interrupted" in text:
            raise ToolInputError(
                f"the query ran for more than {QUERY_SECONDS:g} s and was stopped: filter on "
                "indexed columns (spans.start_ns, spans.trace_id, spans.pid, span_attrs, "
                "event_attrs) or add a LIMIT"
            ) from None
        if "not authorized" in text or "readonly" in text or "read-only" in text:
            raise ToolInputError(
                f"sql: refused ({text}): query is read-only; only SELECT (and WITH ... "
                "SELECT) statements may run"
            ) from None
        raise ToolInputError(f"sql: {text} (schema shows the tables and columns)") from None
    finally:
        conn.close()
    data: dict[str, Any] = {
        "columns": columns,
        "rows": [[_cell(v) for v in row] for row in rows[:MAX_ROWS]],
    }
    if len(rows) > MAX_ROWS:
        left_out(data, "rows", None, "add a LIMIT/OFFSET or aggregate (count, group by)")
    return data


_NOTES = {
    "times": "every *_ns column is nanoseconds since 1970-01-01 UTC",
    "ids": "trace_id is a 16-byte BLOB (hex(trace_id) or lower(hex(trace_id)) to show it; "
    "x'0af7...' to match one); span ids are signed 64-bit integers "
    "(printf('%016x', span_id) is the hex other tools show)",
    "attributes": "JSON text: json_extract(attributes, '$.\"messaging.destination.name\"')",
    "kind": "spans.kind: 0 internal, 1 server, 2 client, 3 producer (send), 4 consumer (receive)",
    "status": "spans.status_code: 0 unset, 1 ok, 2 error (status_description says why)",
    "pid": "spans.pid and process_name are those of the process that recorded the span",
    "runs": "resources.run_id is each process's run; runs has one row per run",
    "flight_staged": "a large flight recording whose records are stored (body, binary) but "
    "not yet all spans: the spans appear once stored; a row left means an incomplete "
    "recording",
    "span_backlog": "spans a burst stored compact (body, binary) and the program has not "
    "made into rows yet: they appear in spans once it has (when idle or at its end); "
    "sum(spans) is how many the tables above do not show yet",
    "fast": "indexed: spans(start_ns), (end_ns), (trace_id), (pid, start_ns); "
    "span_attrs/event_attrs (key, value) for the indexed attribute keys below; "
    "events(span_pk), (time_ns); traces(start_ns)",
}
_EXAMPLES = [
    "SELECT name, count(*) FROM spans GROUP BY name ORDER BY 2 DESC LIMIT 20",
    "SELECT s.name, s.pid, s.status_description FROM spans s WHERE s.status_code = 2 LIMIT 20",
    "SELECT e.name, e.time_ns, e.attributes FROM event_attrs a JOIN events e USING (event_pk) "
    "WHERE a.key = 'procscope.state.object' AND a.value = 'ledger' ORDER BY e.time_ns",
    "SELECT s.* FROM span_attrs a JOIN spans s USING (span_pk) "
    "WHERE a.key = 'messaging.destination.name' AND a.value = 'jobs' LIMIT 20",
]


def schema(reader: Reader) -> dict[str, Any]:
    db = reader.db()
    conn = db.conn
    tables: dict[str, Any] = {}
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ):
        columns = [
            f"{row[1]} {row[2]}".strip() for row in conn.execute(f'PRAGMA table_info("{name}")')
        ]
        tables[name] = {"columns": columns}
    with reader.deadline(2.0):
        for name, sql in (
            ("spans", "SELECT max(span_pk) FROM spans"),
            ("events", "SELECT max(event_pk) FROM events"),
            ("traces", "SELECT count(*) FROM traces"),
        ):
            if name in tables:
                tables[name]["rows_about"] = conn.execute(sql).fetchone()[0] or 0
        vocabulary = {
            "queues": _distinct(conn, "span_attrs", "messaging.destination.name"),
            "traced_objects": _distinct(conn, "event_attrs", "procscope.state.object"),
            "indexed_span_attributes": _distinct_keys(conn, "span_attrs"),
            "indexed_event_attributes": _distinct_keys(conn, "event_attrs"),
        }
    data = {
        "tables": tables,
        "notes": _NOTES,
        "vocabulary": vocabulary,
        "attribute_names": "docs/semantic-conventions.md: messaging.*, procscope.messaging.*, "
        "procscope.lifecycle.*, procscope.state.*, process.*, thread.*, exception.*",
        "example_queries": _EXAMPLES,
        "query_limits": f"{MAX_ROWS} rows, {QUERY_SECONDS:g} s, one read-only statement",
    }
    if len(encode(data)) > 20_000:  # a DB with very many queues or objects
        for key in ("queues", "traced_objects"):
            vocabulary[key] = vocabulary[key][:20]
    return data


def _distinct(conn: sqlite3.Connection, table: str, key: str, most: int = 50) -> list[Any]:
    """Distinct values of an indexed attribute: one skip-scan of its index, so
    cheap for a few hundred values even in a large DB."""
    values: list[Any] = []
    row = conn.execute(f"SELECT min(value) FROM {table} WHERE key = ?", (key,)).fetchone()
    while row is not None and row[0] is not None and len(values) < most:
        values.append(row[0])
        row = conn.execute(
            f"SELECT min(value) FROM {table} WHERE key = ? AND value > ?", (key, row[0])
        ).fetchone()
    return values


def _distinct_keys(conn: sqlite3.Connection, table: str) -> list[str]:
    keys: list[str] = []
    row = conn.execute(f"SELECT min(key) FROM {table}").fetchone()
    while row is not None and row[0] is not None and len(keys) < 50:
        keys.append(row[0])
        row = conn.execute(f"SELECT min(key) FROM {table} WHERE key > ?", (row[0],)).fetchone()
    return keys


TOOLS = (
    Tool(
        "schema",
        "The trace DB's tables and columns, how ids, times and attributes are stored, what "
        "is indexed, the queue and traced-object names recorded, and example SQL. Call it "
        "before query(), or to learn which names the other tools accept.",
        schema,
    ),
    Tool(
        "query",
        "Run one read-only SQL SELECT over the trace DB (SQLite) when no other tool asks "
        f"the question. At most {MAX_ROWS} rows and {QUERY_SECONDS:g} s; BLOB trace ids "
        "come back as hex; anything that would write is refused. Call schema first.",
        query,
        (Param("sql", "string", "one SQLite SELECT statement", required=True),),
    ),
)
