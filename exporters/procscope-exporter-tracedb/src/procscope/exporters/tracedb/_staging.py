"""Flight recordings staged in the trace DB: stored at once, made into spans after.

A flight recorder dump of a full ring (100,000 records) takes seconds to become spans
and rows, and a process that dumps is often about to die: a worker whose exception ends
its target, a child whose exit flush has half a second. So a dump is first stored as
ONE row of ``flight_staged`` (the records, compact, as ``procscope.core._flight_stage``
encodes them: a tenth of a second for 100,000), then made into spans, and the row is
removed once they are stored. A row still there after its process ended is finished by
whoever reaps it (:meth:`StagingMixin.expand_staged`): its spans' ids derive from the
row's key and each record, so spans stored before the death are not stored twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExportResult

from procscope.core import losses
from procscope.core.threadinfo import current_process_name

from ._convert import plain_rows_with_ids
from ._schema import trace_id_to_db
from ._writer import Batch, Writer, without_stored_spans

# A staged recording's row, as :meth:`StagingMixin.staged_rows` returns it.
StagedRow = tuple[int, int, str | None, int | None, int | None, bytes]


class StagingMixin:
    """The trace DB exporter's part in staging flight recordings (see the module)."""

    _under_lock: Callable[[int, Any], SpanExportResult]
    _write_locked: Callable[..., SpanExportResult]
    _writer_here: Callable[[], Writer]

    def stage_flight(
        self, key: int, trace_id: int, reason: str, records: int, body: bytes,
        origin: tuple[Any, Any],
    ) -> bool:
        """Store a recording's encoded records under ``key`` in one transaction (written
        by this process itself, even a child that sends its spans to the DB's owner:
        one row, and the point is to have it stored before anything else). Never raises."""
        resource, scope = origin
        row = [key, os.getpid(), current_process_name(),
               trace_id_to_db(trace_id), reason, records, time.time_ns(), None, None, body]

        def build(writer: Writer) -> Batch:
            row[7], row[8] = writer.resource_id(resource), writer.scope_id(scope)
            return Batch(staged=[tuple(row)])

        done = self._under_lock(0, lambda: self._write_locked(build, 0, quiet=True))
        return done == SpanExportResult.SUCCESS

    def unstage_flight(self, key: int) -> bool:
        """Remove a staged recording whose spans are all stored. Never raises."""
        done = self._under_lock(
            0, lambda: self._write_locked(lambda _writer: Batch(unstaged=[key]), 0, quiet=True))
        return done == SpanExportResult.SUCCESS

    def store_spooled_losses(self) -> int:
        """Store the loss totals processes left in the spool directory when their own
        writes failed (losses.spool), and remove the files stored; how many. Never
        raises."""
        found = losses.spooled()
        if not found:
            return 0
        rows = [row for _path, file_rows, _run in found for row in file_rows]
        loss_runs = sorted({(run, row[0]) for _path, file_rows, run in found if run
                            for row in file_rows})
        done = self._under_lock(0, lambda: self._write_locked(
            lambda _writer: Batch(losses=rows, loss_runs=loss_runs), 0, quiet=True))
        if done != SpanExportResult.SUCCESS:
            return 0  # (left for the next top process)
        for path, _rows, _run in found:
            try:
                os.unlink(path)
            except OSError:
                pass
        return len(found)

    def staged_rows(self, pid: int | None = None) -> list[StagedRow]:
        """Staged recordings left (of process ``pid``): (key, pid, process name,
        resource id, scope id, body), oldest first."""
        rows: list[StagedRow] = []

        def read() -> SpanExportResult:
            conn = self._writer_here().conn
            sql = ("SELECT staged_key, pid, process_name, resource_id, scope_id, body "
                   "FROM flight_staged")
            params: tuple[Any, ...] = ()
            if pid is not None:
                sql += " WHERE pid = ?"
                params = (pid,)
            rows.extend(conn.execute(sql + " ORDER BY staged_ns", params))
            return SpanExportResult.SUCCESS

        self._under_lock(0, read)
        return rows

    def store_staged(self, row: StagedRow, plains: Sequence[tuple[Any, ...]]) -> bool:
        """Store a staged recording's spans (made again from its body) and remove its
        row, in one transaction; spans stored already (before its process died) are left
        out. Never raises."""
        key, pid, name, resource_id, scope_id, _body = row

        def build(writer: Writer) -> Batch:
            writer.know_resource(resource_id)
            batch = plain_rows_with_ids(plains, (resource_id, scope_id), pid, name or "")
            batch = without_stored_spans(writer.conn, batch)
            batch.unstaged = [key]
            return batch

        done = self._under_lock(
            len(plains), lambda: self._write_locked(build, len(plains)))
        return done == SpanExportResult.SUCCESS
