"""Retention: keep a long-running program's trace DB bounded in age and size.

Whole traces are deleted, oldest (by first start) first, with their spans, events, links
and index rows, so that what remains is never a trace with holes cut by the pruning.
The DB is created with ``auto_vacuum = INCREMENTAL``; after pruning, the freed pages are
given back to the file system, so the file itself shrinks, not only its contents.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from ._forkgate import begin_immediate, end_transaction
from ._schema import indexed_keys

# Prune below the limit, not just to it, so that the next batches do not each prune again.
SIZE_TARGET = 0.8
SIZE_ROUNDS = 3
_CHUNK = 400  # trace ids per DELETE (SQLite's default limit is 999 bound variables)


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the DB's pages in use (the file minus its free pages)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def delete_traces(conn: sqlite3.Connection, trace_ids: Sequence[bytes]) -> None:
    """Delete these traces entirely; the caller holds the write transaction."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_spans (span_pk INTEGER PRIMARY KEY)")
    for start in range(0, len(trace_ids), _CHUNK):
        chunk = list(trace_ids[start : start + _CHUNK])
        marks = ",".join("?" * len(chunk))
        conn.execute("DELETE FROM temp.prune_spans")
        conn.execute(
            f"INSERT INTO temp.prune_spans SELECT span_pk FROM spans WHERE trace_id IN ({marks})",
            chunk,
        )
        _delete_index_rows(conn)
        for table in ("events", "links", "spans"):
            conn.execute(
                f"DELETE FROM {table} WHERE span_pk IN (SELECT span_pk FROM temp.prune_spans)"
            )
        conn.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", chunk)


def forget_empty_runs(conn: sqlite3.Connection) -> None:
    """Drop the rows of runs whose traces are all gone (schema version 3 and later)."""
    try:
        conn.execute(
            "DELETE FROM runs WHERE run_id NOT IN "
            "(SELECT DISTINCT run_id FROM traces WHERE run_id IS NOT NULL)"
        )
        conn.execute(
            "DELETE FROM run_pids WHERE run_id NOT IN (SELECT run_id FROM runs)"
        )
    except sqlite3.OperationalError as exc:
        if "no such" not in str(exc):
            raise


def _delete_index_rows(conn: sqlite3.Connection) -> None:
    """Delete the side-table rows of the spans (and their events) in temp.prune_spans.

    The side tables have no index by span: their rows are found from the attributes of
    the spans and events themselves, and deleted by exact primary key.
    """
    span_keys, event_keys = indexed_keys(conn)
    span_rows = []
    for span_pk, text in conn.execute(
        "SELECT span_pk, attributes FROM spans WHERE span_pk IN "
        "(SELECT span_pk FROM temp.prune_spans) AND attributes IS NOT NULL"
    ):
        for key, value in json.loads(text).items():
            if key in span_keys:
                span_rows.append((key, value, span_pk))
    conn.executemany(
        "DELETE FROM span_attrs WHERE key = ? AND value = ? AND span_pk = ?", span_rows
    )
    event_rows = []
    for event_pk, text in conn.execute(
        "SELECT event_pk, attributes FROM events WHERE span_pk IN "
        "(SELECT span_pk FROM temp.prune_spans) AND attributes IS NOT NULL"
    ):
        for key, value in json.loads(text).items():
            if key in event_keys:
                event_rows.append((key, value, event_pk))
    conn.executemany(
        "DELETE FROM event_attrs WHERE key = ? AND value = ? AND event_pk = ?", event_rows
    )


def prune(
    conn: sqlite3.Connection,
    *,
    max_bytes: int | None,
    max_age_s: float | None,
    now_ns: int | None = None,
) -> int:
    """Apply the limits in one write transaction; returns how many traces were deleted."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    deleted = 0
    begin_immediate(conn)
    try:
        if max_age_s is not None:
            cutoff = now_ns - int(max_age_s * 1e9)
            old = [
                row[0]
                for row in conn.execute(
                    "SELECT trace_id FROM traces WHERE start_ns < ? AND end_ns < ? "
                    "ORDER BY start_ns",
                    (cutoff, cutoff),
                )
            ]
            delete_traces(conn, old)
            deleted += len(old)
        # Spans' share of the pages is estimated from the bytes per span, which the
        # file's fixed pages (every table's and index's root) and half-empty pages left by
        # the deletes make an underestimate: measured again, up to SIZE_ROUNDS times.
        for _round in range(SIZE_ROUNDS if max_bytes is not None else 0):
            assert max_bytes is not None
            used = used_bytes(conn)
            if used <= (max_bytes if _round == 0 else max_bytes * SIZE_TARGET):
                break
            total = conn.execute("SELECT coalesce(sum(span_count), 0) FROM traces").fetchone()
            bytes_per_span = used / max(1, int(total[0]))
            spans_to_free = (used - max_bytes * SIZE_TARGET) / bytes_per_span
            victims: list[bytes] = []
            freed = 0
            for trace_id, count in conn.execute(
                "SELECT trace_id, span_count FROM traces ORDER BY start_ns"
            ):
                if freed >= spans_to_free:
                    break
                victims.append(trace_id)
                freed += count
            if not victims:
                break
            delete_traces(conn, victims)
            deleted += len(victims)
        if deleted:
            forget_empty_runs(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        end_transaction()
    if deleted:
        # Give the freed pages back to the file system. executescript, not execute: the
        # pragma frees one page per step, and execute() steps a row-less statement once.
        conn.executescript("PRAGMA incremental_vacuum;")
    return deleted
