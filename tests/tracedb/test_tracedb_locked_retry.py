"""A DB locked by other writers for longer than one busy timeout: the batch is written
once the lock is free, not lost (many processes writing big batches at once)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from procscope.core import losses
from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter
from procscope.exporters.tracedb._exporter import LOCKED_ATTEMPTS


def _spans(count: int) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("locked")
    for _ in range(count):
        with tracer.start_as_current_span("work"):
            pass
    return list(memory.get_finished_spans())


def _hold_lock(db: Path, seconds: float, held: threading.Event) -> threading.Thread:
    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def test_a_batch_waits_out_a_lock_longer_than_one_busy_timeout(tmp_path: Path) -> None:
    """Locked for about two busy timeouts: the export succeeds and every span is stored."""
    db = tmp_path / "t.db"
    exporter = TraceDBSpanExporter(str(db), timeout=0.3)
    assert exporter.export(_spans(1)) is SpanExportResult.SUCCESS  # the file exists
    held = threading.Event()
    assert LOCKED_ATTEMPTS >= 3
    holder = _hold_lock(db, 0.3 * 2 + 0.1, held)
    held.wait()
    lost_before = sum(losses.lost_by_reason().values())
    assert exporter.export(_spans(50)) is SpanExportResult.SUCCESS
    holder.join()
    exporter.shutdown()
    assert sum(losses.lost_by_reason().values()) == lost_before
    with TraceDB(str(db)) as reader:
        assert reader.span_count() == 51


def test_a_lock_held_past_every_attempt_loses_the_batch_and_counts_it(tmp_path: Path) -> None:
    """Locked for longer than every attempt: the batch is counted lost (export_failed),
    the export returns, and the next batch after the lock is written."""
    db = tmp_path / "t.db"
    exporter = TraceDBSpanExporter(str(db), timeout=0.2)
    assert exporter.export(_spans(1)) is SpanExportResult.SUCCESS
    held = threading.Event()
    holder = _hold_lock(db, 0.2 * LOCKED_ATTEMPTS + 0.5, held)
    held.wait()
    before = losses.lost_by_reason().get(losses.EXPORT_FAILED, 0)
    assert exporter.export(_spans(7)) is SpanExportResult.FAILURE
    assert losses.lost_by_reason().get(losses.EXPORT_FAILED, 0) == before + 7
    holder.join()
    assert exporter.export(_spans(3)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with TraceDB(str(db)) as reader:
        assert reader.span_count() == 4
