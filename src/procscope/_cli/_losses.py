"""Saying that a recording is incomplete: what the DB's ``losses`` table holds.

Every read command writes ONE line on stderr when the DB it reads records losses (spans
or records that some process counted and gave up: a full queue under the ``drop``
policy, a ``wait`` that ran out, a child's exit flush out of budget, a batch the exporter
could not write); ``procscope traces`` also says it in its own output and its ``--json``.
See docs/tracedb.md, "Incomplete recordings".
"""

from __future__ import annotations

import sqlite3
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procscope.exporters.tracedb import LossRecord, TraceDB

# How many (reason, pid) counts the line names; the rest are summed as "N more".
NAMED_AT_MOST = 4


def recorded_losses(db: TraceDB, run: str | None = None) -> list[LossRecord]:
    """The DB's losses (of ``run``), largest first; none for a DB that cannot tell
    (never fails)."""
    try:
        return db.losses(run=run)
    except (sqlite3.Error, ValueError):
        return []


# A flight recording whose records are stored but not yet all made into spans (its
# process is making them, or died doing so: its parent or the top process finishes).
STAGED = "flight_staged"
# Spans stored under a burst and not yet made into rows (the trace DB's span backlog):
# the program makes them when idle or at its end.
NOT_INDEXED = "not_indexed"


def describe(records: list[LossRecord]) -> str:
    """``recording incomplete: 12,345 records dropped (queue_full in pid 4711: 12,000;
    exit_flush in pid 4712: 345)``, for flight recordings not yet made into spans
    ``100,000 flight records not yet spans (pid 4713)``, and for the span backlog
    ``8,192 spans stored but not yet indexed (pid 4711; ...)``."""
    parts = []
    dropped = [r for r in records if r.reason not in (STAGED, NOT_INDEXED)]
    if dropped:
        total = sum(record.count for record in dropped)
        named = [f"{r.reason} in pid {r.pid}: {r.count:,}" for r in dropped[:NAMED_AT_MOST]]
        rest = dropped[NAMED_AT_MOST:]
        if rest:
            named.append(f"{len(rest)} more: {sum(r.count for r in rest):,}")
        noun = "record" if total == 1 else "records"
        parts.append(f"{total:,} {noun} dropped ({'; '.join(named)})")
    staged = _waiting(records, STAGED, ("flight record", "flight records"), "not yet spans")
    if staged:
        parts.append(staged)
    waiting = _waiting(records, NOT_INDEXED, ("span", "spans"), "stored but not yet indexed",
                       "; the program indexes them when idle and at its end")
    if waiting:
        parts.append(waiting)
    return "recording incomplete: " + "; ".join(parts)


def _waiting(records: list[LossRecord], reason: str, nouns: tuple[str, str], what: str,
             more: str = "") -> str:
    """``12,345 spans stored but not yet indexed (pid 4711, 4712...)``: what ``records``
    hold under ``reason`` (stored, not shown yet), or "" when none."""
    found = [r for r in records if r.reason == reason]
    if not found:
        return ""
    total = sum(record.count for record in found)
    pids = ", ".join(str(pid) for pid in sorted({r.pid for r in found}))
    return f"{total:,} {nouns[total != 1]} {what} (pid {pids}{more})"


def warn_if_incomplete(db: TraceDB, run: str | None = None) -> None:
    """The one stderr line of every read command, when the DB records losses (in the
    run it read)."""
    records = recorded_losses(db, run)
    if records:
        sys.stderr.write(f"procscope: {describe(records)}\n")


def as_json(records: list[LossRecord]) -> dict[str, Any]:
    """The ``recording`` field of ``--json`` outputs: complete or not, and by how much."""
    return {
        "complete": not records,
        "lost": sum(record.count for record in records),
        "losses": [record.to_dict() for record in records],
    }
