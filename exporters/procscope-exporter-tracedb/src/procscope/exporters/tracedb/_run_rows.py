"""The summary rows a batch adds or updates: its traces, its runs, its runs' pids.

A batch holds the spans of one process, nearly always of one run: these are a handful of
UPSERTs per batch, merged with what other processes' batches wrote, in any order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _schema

# TRACE_UPSERT with the trace's run: the run of the first batch that stored a span of it.
TRACE_RUN_UPSERT = (
    "INSERT INTO traces (trace_id, start_ns, end_ns, span_count, error_count, root_name, "
    "root_span_pk, run_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (trace_id) DO UPDATE SET "
    "start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns), "
    "span_count = span_count + excluded.span_count, "
    "error_count = error_count + excluded.error_count, "
    "root_name = coalesce(root_name, excluded.root_name), "
    "root_span_pk = coalesce(root_span_pk, excluded.root_span_pk), "
    "run_id = coalesce(run_id, excluded.run_id)"
)


def run_id_of_resource(attributes: str) -> str | None:
    """The ``procscope.run.id`` in a resource's attributes (JSON text), or None."""
    try:
        value = json.loads(attributes).get("procscope.run.id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def write_summaries(
    conn: sqlite3.Connection,
    spans: Sequence[tuple[Any, ...]],
    traces: Iterable[tuple[Any, ...]],
    run_of: Mapping[Any, str | None],
) -> None:
    """Merge a batch into ``traces``, ``runs`` and ``run_pids``: ``spans`` are its span
    rows (final ids), ``traces`` its per-trace summaries (``_writer.summarise_traces``),
    ``run_of`` maps a resource row id to its run id."""
    pids: set[tuple[str, int]] = set()
    trace_runs: dict[bytes, str | None] = {}
    last_key: Any = None
    run: str | None = None
    for row in spans:
        # row: span_pk, trace_id, ..., resource_id (11), scope_id, pid (13). Runs and
        # pids change rarely within a batch.
        key = (row[11], row[13])
        if key != last_key:
            last_key, run = key, run_of.get(row[11])
            if run is not None:
                pids.add((run, row[13]))
        if row[1] not in trace_runs:
            trace_runs[row[1]] = run
    trace_rows = [(*trace, trace_runs.get(trace[0])) for trace in traces]
    conn.executemany(TRACE_RUN_UPSERT, trace_rows)
    # A run's extent and counts are those of its traces' parts in this batch.
    runs: dict[str, list[int]] = {}
    for _trace, start, end, count, errors, _name, _pk, trace_run in trace_rows:
        if trace_run is None:
            continue
        entry = runs.setdefault(trace_run, [start, end, 0, 0])
        entry[0], entry[1] = min(entry[0], start), max(entry[1], end)
        entry[2] += count
        entry[3] += errors
    if runs:
        conn.executemany(_schema.RUN_UPSERT, [(r, *entry) for r, entry in runs.items()])
        conn.executemany(_schema.RUN_PID_INSERT, sorted(pids))
