"""The span backlog: under a burst, spans are stored first and made into rows after.

A span's rows (the span, its index rows, links, events, the trace and run summaries)
cost about 25-40 us of the writing process's CPU, most of it SQLite's B-tree inserts at
random places. A busy program records faster than that: at full recall its recorder
then waits for the DB, and the program runs at the DB's pace (docs/performance.md).

So a large batch from the recorder (``BACKLOG_MIN_SPANS`` or more: the program is
recording faster than about 20,000 spans a second), while the backlog holds fewer than
``BACKLOG_MAX_SPANS``, is stored as compact rows of ``span_backlog`` instead: its plain
spans (``procscope.core.recorded``), ``marshal``-encoded and compressed, with their
resource and scope ids, ``BACKLOG_ROW_SPANS`` a row, for about 3 us a span. Nothing is
lost and nothing waits: the row is in the DB, durable like any other, in the same
transaction as the batch's losses.

Rows are made from it later, by :meth:`BacklogMixin.index_backlog`, oldest first
(exactly the rows the batch would have had, from the same code: ``_convert._plain_rows``),
and each backlog row is deleted in the transaction that makes its rows, so each span is
made into rows once, whoever does it and whenever that is interrupted:

- by the recorder's drain thread of any process that writes the DB itself, once the
  program has recorded nothing for ``recorder.IDLE_AFTER`` (the recorder's idle hook), a
  backlog row a tick;
- by ``Scope.force_flush()``, every row;
- by the top process at its end, every row left, ``EXIT_ROWS_TOGETHER`` a transaction
  (within ``EXIT_BUDGET_S``);
- by any later writer of the file (the next run), when idle or at its end.

Until then read commands say, in their one line on stderr, how many spans are stored
and not yet indexed (``_runs.BACKLOG_AS_LOSSES``). Batches that must be checked against
the spans stored already (a relayed batch whose owner may have stored it) and files with
retention (``max_bytes``, ``max_age``: pruning counts rows) are never put in the backlog.
"""

from __future__ import annotations

import marshal
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExportResult

from procscope.core import handoff, losses
from procscope.core.guard import warn_once

from . import _schema
from ._convert import _plain_rows, origin_ids
from ._writer import Batch, Writer

# A batch of the recorder this large goes to the backlog: with the recorder's drain every
# 50 ms, a program recording more than about 20,000 spans a second.
BACKLOG_MIN_SPANS = 1024
# At most this many spans wait in the backlog (of every process of the file): past it a
# batch's rows are made at once, as without a backlog, and the program runs at the DB's
# pace again. A burst is smoothed; a program that records flat out for minutes does not
# leave minutes of indexing to its end (131,072 spans: about 4 s of it).
BACKLOG_MAX_SPANS = 131_072
# Spans per backlog row: indexing one row is one transaction of about 25-40 ms, short
# enough for the drain thread to do between two ticks of an idle program.
BACKLOG_ROW_SPANS = 1024
# Rows per transaction at the program's end: a commit writes every page the transaction
# changed, and the spans' index pages are changed at random places, so fewer, larger
# commits write fewer pages (76,000 spans of the round trip: 3.5 s one row at a time,
# 2.4 s eight at a time, 2.3 s sixteen). Eight: a step of about 0.25 s, well inside the
# 1 s in which the exit's budget must see progress (_scope.run_within).
EXIT_ROWS_TOGETHER = 8
# How long the top process's end goes on indexing what is left (the rest is indexed by
# the next writer of the file, and read commands say how many spans wait). The whole
# exit is also bounded, while it makes progress, by _scope.SHUTDOWN_MAX_SECONDS.
EXIT_BUDGET_S = 30.0
# Format of a row's body: zlib(marshal((BODY_FORMAT, ((count, resource id, scope id),
# ...), plain spans))). marshal's format 4 (Python 3.4 on) is read by every Python we
# support; level 1: most of the size off (keys repeat) for a small part of the time.
BODY_FORMAT = 1
_MARSHAL_VERSION = 4

BacklogRow = tuple[int, int, str | None, int, bytes]


def encode_body(ids: Sequence[tuple[Any, Any]], plains: Sequence[tuple[Any, ...]]) -> bytes:
    """One backlog row's body: ``plains`` with their (resource id, scope id) each, run-length
    encoded (a batch has a few origins). Raises ValueError for a value marshal cannot hold."""
    runs: list[tuple[int, Any, Any]] = []
    last = None
    for pair in ids:
        if pair == last:
            count, rid, sid = runs[-1]
            runs[-1] = (count + 1, rid, sid)
        else:
            runs.append((1, *pair))
            last = pair
    return zlib.compress(marshal.dumps((BODY_FORMAT, tuple(runs), list(plains)),
                                       _MARSHAL_VERSION), 1)  # fmt: skip


def decode_body(body: bytes) -> tuple[list[tuple[Any, Any]], list[tuple[Any, ...]]]:
    """(ids, plain spans) of a backlog row's body; ValueError when it is not one."""
    try:
        fmt, runs, plains = marshal.loads(zlib.decompress(body))
    except (zlib.error, EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"not a span backlog body ({exc})") from None
    if fmt != BODY_FORMAT:
        raise ValueError(f"a span backlog body of format {fmt!r}, not {BODY_FORMAT}")
    ids: list[tuple[Any, Any]] = []
    for count, rid, sid in runs:
        ids += [(rid, sid)] * count
    if len(ids) != len(plains):
        raise ValueError("a span backlog body whose ids and spans differ in number")
    return ids, plains


def backlog_full(writer: Writer, count: int) -> bool:
    """Whether ``count`` more spans would take the file's backlog past its cap (under the
    write lock: the count is then exact)."""
    waiting = writer.conn.execute("SELECT coalesce(sum(spans), 0) FROM span_backlog").fetchone()
    return int(waiting[0]) + count > BACKLOG_MAX_SPANS


def backlog_batch(
    items: Sequence[tuple[tuple[Any, ...], tuple[Any, Any]]], writer: Writer, pid: int,
    process_name: str,
) -> Batch:
    """The backlog rows of (plain span, (resource, scope)) pairs, under the write lock
    (resource and scope ids are looked up, stored when new, in this transaction)."""
    ids = origin_ids(items, writer)
    plains = [plain for plain, _ in items]
    now = time.time_ns()
    batch = Batch()
    for start in range(0, len(plains), BACKLOG_ROW_SPANS):
        chunk = plains[start : start + BACKLOG_ROW_SPANS]
        body = encode_body(ids[start : start + BACKLOG_ROW_SPANS], chunk)
        batch.backlog.append((pid, process_name, len(chunk), now, body))
    return batch


def backlog_or_rows(
    items: Sequence[tuple[tuple[Any, ...], tuple[Any, Any]]],
    make: Callable[[Writer, int, str], Batch],
) -> Callable[[Writer, int, str], Batch]:
    """What makes a recorder batch's rows under the write lock: its backlog rows, or
    ``make``'s rows now when the backlog is full or a value cannot be encoded."""
    count = len(items)

    def build(writer: Writer, pid: int, name: str) -> Batch:
        if backlog_full(writer, count):
            return make(writer, pid, name)
        try:
            return backlog_batch(items, writer, pid, name)
        except ValueError:  # a value marshal cannot hold: rows now, as always
            return make(writer, pid, name)

    return build


def indexed_batch(writer: Writer, rows: Sequence[BacklogRow]) -> Batch:
    """The rows of backlog rows, in order (numbered from the writer's next free ids: call
    it under the write lock), and those backlog rows marked done."""
    batch = Batch(numbered=True)
    for key, pid, process_name, spans, body in rows:
        batch.backlog_done.append(key)
        try:
            ids, plains = decode_body(body)
        except ValueError as exc:
            # Not a body this procscope can read (damaged, or of a later format): dropped,
            # its spans counted lost here, rather than tried again for ever.
            warn_once(f"tracedb-backlog:{exc}", "procscope: a span backlog row of the "
                      "trace DB cannot be read (%s); its %d spans are lost", exc, spans)
            losses.count_lost(spans, "backlog_unreadable")
            continue
        for rid in {rid for rid, _sid in ids}:
            writer.know_resource(rid)  # (its run id, for the trace and run summaries)
        _plain_rows(plains, ids, pid, process_name or "", batch,
                    first=writer.span_base + len(batch.spans),
                    first_event=writer.event_base + len(batch.events))  # fmt: skip
    return batch


class BacklogMixin:
    """The trace DB exporter's part in the span backlog (see the module)."""

    _under_lock: Callable[[int, Any], SpanExportResult]
    _write_locked: Callable[..., SpanExportResult]
    _writer_here: Callable[[], Writer]
    max_bytes: int | None
    max_age: float | None
    _relay_to: bytes | None
    _stopped: bool
    _lock: threading.Lock
    # Spans this exporter has made into rows from the backlog (the exit's progress:
    # _scope.queued_spans); read without the lock.
    spans_indexed = 0

    def backlog_wanted(self, count: int) -> bool:
        """Whether a recorder batch of ``count`` spans goes to the backlog."""
        return count >= BACKLOG_MIN_SPANS and self.max_bytes is None and self.max_age is None

    def index_backlog(
        self, rows: int | None = None, budget_s: float | None = None, together: int = 1
    ) -> bool:
        """Make backlog rows into span rows, oldest first: ``rows`` of them at most, for
        ``budget_s`` at most (None: no limit), ``together`` per transaction. True when no
        row is left (or none can be read or written here: nothing more to do). Never
        raises."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        done = 0
        found: list[int] = []
        while rows is None or done < rows:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            found.clear()

            def build(writer: Writer) -> Batch:
                conn = writer.conn
                taken = conn.execute(
                    "SELECT batch_pk, pid, process_name, spans, body FROM span_backlog "
                    "ORDER BY batch_pk LIMIT ?", (together,)).fetchall()
                if not taken:
                    return Batch()
                found.append(sum(row[3] for row in taken))
                # Keys another process indexed are indexed here too (this process may
                # not have imported the package that added them).
                span_keys, event_keys = _schema.indexed_keys(conn)
                _schema.index_attributes(tuple(sorted(span_keys)), tuple(sorted(event_keys)))
                return indexed_batch(writer, taken)

            outcome = self._under_lock(0, lambda: self._write_locked(build, 0, quiet=True))
            if outcome != SpanExportResult.SUCCESS or not found:
                return True
            self.spans_indexed += found[0]
            done += together
        return False

    def index_at_end(self) -> None:
        """The program's end (at shutdown, in the process that indexes for the program: one
        that writes the DB itself, and is the top process or outlived it): the spans
        stored for later are made into rows now. The exit waits while this makes progress
        (_scope.queued_spans reads ``spans_indexed``)."""
        if self._relay_to is None and handoff.survivor() and not self._stopped:
            self.index_backlog(budget_s=EXIT_BUDGET_S, together=EXIT_ROWS_TOGETHER)

    def index_when_idle(self) -> bool:
        """The recorder's idle hook (procscope.core.recorder): one backlog row made into
        rows; True when none is left. A child that sends its spans to the DB's owner
        leaves the backlog to the owner (it has no connection of its own to spare)."""
        if self._relay_to is not None or self._stopped:
            return True
        # Looked for first with a read (no write lock): an idle program looks every few
        # seconds, and other writers must not wait for that.
        if not self._lock.acquire(blocking=False):
            return False  # (an export is running: not idle after all)
        try:
            if self._stopped:
                return True
            found = self._writer_here().conn.execute(
                "SELECT EXISTS (SELECT 1 FROM span_backlog)").fetchone()[0]
        except Exception:  # noqa: BLE001 -- no DB, no table: nothing to index here
            found = False
        finally:
            self._lock.release()
        return not found or self.index_backlog(rows=1)
