"""Plain spans into rows: ``plain_to_batch`` stores what ``spans_to_batch`` stores for the
ReadableSpans made of the same records, row for row, and the DB answers the same."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import procscope
from procscope._sampler import AdjustableRateSampler
from procscope.core import shared_state
from procscope.core.recorder import RecordingSpanProcessor
from procscope.exporters.tracedb import TraceDB
from procscope.exporters.tracedb._convert import (
    numbered_batch,
    origins_to_batch,
    plain_to_batch,
    spans_to_batch,
)
from procscope.exporters.tracedb._writer import Batch, Writer


@procscope.trace_state
class Stock:
    """A traced object: a change, and a change that fails."""

    count = 0

    def move(self, count: int) -> None:
        if self.count + count < 0:
            raise ValueError("not enough")
        self.count += count


def work(tracer: Any) -> None:
    """Every record kind: sends and receives (with links), an unlinked pipe receive,
    thread and task spans (one failing), a thread span with an event, a link and a list
    value, state changes (one failing)."""
    orders: queue.Queue[Any] = queue.Queue()
    procscope.name(orders, "orders")
    stock = Stock()

    def packer() -> None:
        span = procscope_current_span()
        span.set_attribute("sizes", [3, 4])
        span.add_event("packed", {"boxes": 2})
        span.add_link(span.get_span_context(), {"why": "self"})
        orders.put({"box": 1})
        stock.move(2)

    def failing() -> None:
        raise RuntimeError("packer broke")

    with tracer.start_as_current_span("shift"):
        for target in (packer, failing):
            thread = threading.Thread(target=target, name=target.__name__)
            thread.start()
            thread.join()
        orders.get()
    with pytest.raises(ValueError):
        stock.move(-5)
    left, right = multiprocessing.Pipe()
    left.send_bytes(b"raw")
    right.recv_bytes()
    left.close()
    right.close()

    async def main() -> None:
        inbox: asyncio.Queue[int] = asyncio.Queue()
        await asyncio.create_task(inbox.put(5), name="putter")
        await inbox.get()

    asyncio.run(main())


def procscope_current_span() -> Any:
    from opentelemetry import trace

    return trace.get_current_span()


class Keeping(RecordingSpanProcessor):
    """A recorder keeping each delivered record's plain span, resource and scope."""

    def __init__(self, downstream: Any, sink: Any = None) -> None:
        self.kept: list[tuple[Any, Any, Any]] = []
        super().__init__(downstream, sink=sink)

    def _deliver(self, batch: list[tuple[Any, ...]]) -> None:
        for record in batch:
            span = record[0].materialise(record)  # (its resource and scope)
            self.kept.append((record[0].plain(record), span.resource, span.instrumentation_scope))
        super()._deliver(batch)


class Collect:
    """A span processor keeping every span it is given, in order."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@pytest.fixture(scope="module")
def recorded(instrumented_run: Any) -> tuple[list[Any], list[tuple[Any, Any, Any]]]:
    """The workload's record-made spans, and their plain spans with resource and scope."""
    settings = shared_state.settings()
    saved = (settings.sample_rate, settings.level, settings.capture_content)
    settings.sample_rate, settings.level, settings.capture_content = 1.0, "full", True
    collect = Collect()
    recorder = Keeping([collect])
    provider = TracerProvider(sampler=AdjustableRateSampler(0.999999))
    provider.add_span_processor(recorder)  # type: ignore[arg-type]
    try:
        instrumented_run(provider, work)
    finally:
        settings.sample_rate, settings.level, settings.capture_content = saved
    ids = {plain[3] for plain, _, _ in recorder.kept}
    return [s for s in collect.spans if s.context.span_id in ids], recorder.kept


def plain_batch(kept: list[tuple[Any, Any, Any]], writer: Any, pid: int, name: str) -> Batch:
    """The rows of ``kept``, a run of spans of one resource and scope at a time."""
    batch = Batch()
    start = 0
    for end in range(1, len(kept) + 1):
        if end == len(kept) or kept[end][1:] != kept[start][1:]:
            _, resource, scope = kept[start]
            plain_to_batch([p for p, _, _ in kept[start:end]], writer, pid, name, resource,
                           scope, batch)
            start = end
    return batch


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_plain_spans_make_the_rows_their_spans_make(recorded: Any, tmp_path: Any) -> None:
    """Span, event, link and index rows are equal, in order, for every record kind."""
    spans, kept = recorded
    assert len(spans) == len(kept) >= 10
    kinds = {(plain[0].split(" ")[0], plain[1]) for plain, _, _ in kept}
    assert {("put", 3), ("get", 4), ("recv_bytes", 4), ("thread", 0), ("task", 0)} <= kinds
    writer = Writer(str(tmp_path / "rows.db"))
    try:
        from_spans = spans_to_batch(spans, writer, os.getpid(), "MainProcess")
        from_plains = plain_batch(kept, writer, os.getpid(), "MainProcess")
        pairs = [(plain, (resource, scope)) for plain, resource, scope in kept]
        from_pairs = origins_to_batch(pairs, writer, os.getpid(), "MainProcess")
    finally:
        writer.close()
    assert from_plains == from_spans
    assert from_pairs == from_spans
    assert from_spans.events and from_spans.links and from_spans.span_attrs
    assert any(row[8] == 2 for row in from_spans.spans)  # an error
    assert any('"sizes":[3,4]' in (row[10] or "") for row in from_spans.spans)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_plain_spans_stored_answer_as_their_spans_do(recorded: Any, tmp_path: Any) -> None:
    """Two DBs, one written from the spans and one from the plain spans, give the same
    traces, trace trees, messages, state history, processes and timelines."""
    spans, kept = recorded
    paths = [str(tmp_path / "spans.db"), str(tmp_path / "plains.db")]
    for path, build in zip(paths, (
        lambda w: spans_to_batch(spans, w, os.getpid(), "MainProcess"),
        lambda w: plain_batch(kept, w, os.getpid(), "MainProcess"),
    )):
        writer = Writer(path)
        try:
            writer.write(Batch(), build=lambda w=writer, b=build: b(w))
        finally:
            writer.close()

    def answers(path: str) -> list[Any]:
        with TraceDB(path) as db:
            traces = db.traces()
            actors = sorted(set(db.process_names().values()))
            return [
                traces,
                [db.trace(t.trace_id) for t in traces],
                db.messages(),
                [db.state_history(name) for name in db.state_objects()],
                db.processes(),
                [db.timeline(actor) for actor in actors],
                db.spans(),
            ]

    first, second = answers(paths[0]), answers(paths[1])
    assert first == second
    traces, trees, messages, states, *_ = first
    assert len(traces) >= 4 and all(trees) and len(messages) >= 2 and states


def stored_shape(path: str) -> list[Any]:
    """What a DB holds, ids and times aside: spans by name and kind, events, links."""
    with TraceDB(path) as db:
        spans = db.spans()
    return sorted(
        (s.name.split("-")[0], s.kind, s.parent_span_id is None, len(s.events), len(s.links))
        for s in spans
    )


def sink_run(instrumented_run: Any, path: str, *, stopped: bool = False) -> int:
    """``work`` recorded through a recorder whose record sink is a trace DB exporter
    (no processors); returns how many records were appended."""
    from procscope.exporters.tracedb import TraceDBSpanExporter

    exporter = TraceDBSpanExporter(path)
    if stopped:
        exporter.shutdown()
    recorder = Keeping([], sink=exporter.write_records)
    provider = TracerProvider(sampler=AdjustableRateSampler(0.999999))
    provider.add_span_processor(recorder)  # type: ignore[arg-type]
    instrumented_run(provider, work)
    exporter.shutdown()
    return len(recorder.kept)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_record_sink_stores_what_the_processors_store(
    instrumented_run: Any, recorded: Any, tmp_path: Any
) -> None:
    """Records given to the trace DB as plain spans (the direct route) are stored as the
    spans the processors' route stores, and nothing is counted lost."""
    from procscope.core import losses

    spans, _ = recorded
    by_spans = str(tmp_path / "spans.db")
    writer = Writer(by_spans)
    try:
        writer.write(Batch(), build=lambda: spans_to_batch(spans, writer, 1, "MainProcess"))
    finally:
        writer.close()
    direct = str(tmp_path / "direct.db")
    assert sink_run(instrumented_run, direct) == len(spans)
    assert stored_shape(direct) == stored_shape(by_spans)
    assert not losses.lost_by_reason()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_record_sink_that_cannot_store_counts_every_record(
    instrumented_run: Any, tmp_path: Any
) -> None:
    """Records the trace DB can no longer take (its exporter shut down) are counted lost
    (export_failed), one for each."""
    from procscope.core import losses

    made = sink_run(instrumented_run, str(tmp_path / "stopped.db"), stopped=True)
    assert made >= 10
    assert losses.lost_by_reason() == {losses.EXPORT_FAILED: made}


def table_rows(path: str) -> dict[str, list[Any]]:
    """Every row of every table of a trace DB, in order."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {}
        for table in tables:
            columns = len(conn.execute(f"PRAGMA table_info({table})").fetchall())
            order = ", ".join(str(n) for n in range(1, columns + 1))
            rows[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        return rows
    finally:
        conn.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_bulk_write_stores_the_rows_of_a_batch(recorded: Any, tmp_path: Any) -> None:
    """Plain spans written in bulk (a flight recorder dump's route, rows numbered under the
    write lock) leave every table exactly as the ReadableSpans made of them, written as a
    batch, do: every record kind, and odd attributes (a NaN, a tuple, an index key with
    an int and a str value)."""
    from procscope.core.recorded import readable_from_plain

    _, kept = recorded
    odd = []
    for number, (plain, resource, scope) in enumerate(kept[:4]):
        attributes = {"messaging.message.id": number if number % 2 else f"m{number}",
                      "ratio": float("nan"), "sizes": (1, 2)}
        odd.append(((*plain[:3], plain[3] ^ 1, *plain[4:12], attributes, *plain[13:]),
                    resource, scope))
    kept = kept + odd
    by_batch, by_bulk = str(tmp_path / "batch.db"), str(tmp_path / "bulk.db")
    writer = Writer(by_batch)
    try:
        spans = [readable_from_plain(plain, resource, scope) for plain, resource, scope in kept]
        writer.write(Batch(), build=lambda: spans_to_batch(spans, writer, 7, "MainProcess"))
    finally:
        writer.close()
    writer = Writer(by_bulk)
    try:
        start = 0
        for end in range(1, len(kept) + 1):  # (one origin a call, as a dump has)
            if end == len(kept) or kept[end][1:] != kept[start][1:]:
                run = [plain for plain, _, _ in kept[start:end]]
                _, resource, scope = kept[start]
                writer.write(Batch(), build=lambda run=run, r=resource, s=scope: numbered_batch(
                    run, writer, 7, "MainProcess", r, s))
                start = end
    finally:
        writer.close()
    expected, got = table_rows(by_batch), table_rows(by_bulk)
    assert got == expected
    assert len(expected["spans"]) == len(kept) and expected["events"] and expected["links"]
    assert any('"ratio":"nan"' in (row[10] or "") for row in expected["spans"])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_bulk_write_of_many_spans_stores_every_index_row(recorded: Any, tmp_path: Any) -> None:
    """Two runs of 100 spans of one process written in bulk (index keys every span shares
    are written as ranges, the columns they share into the statement) leave every table
    as the same spans written as a batch do: a key all share, a key one span lacks, a
    key whose values are 1 and 1.0, a process name with a quote."""
    from procscope.core.recorded import readable_from_plain

    _, kept = recorded
    plain, resource, scope = kept[0]
    runs = []
    for index in range(2):
        plains = []
        for number in range(100):
            attributes: dict[str, Any] = {"process.pid": 42, "messaging.destination.name": "jobs",
                                          "messaging.message.id": 1.0 if number % 2 else 1}
            if index == 1 and number == 50:
                del attributes["messaging.destination.name"]
            span_id = (index * 1000 + number + 1) << 40
            plains.append((*plain[:3], span_id, *plain[4:12], attributes, (), (), plain[15]))
        runs.append(plains)
    by_batch, by_bulk = str(tmp_path / "batch.db"), str(tmp_path / "bulk.db")
    writer = Writer(by_batch)
    try:
        spans = [readable_from_plain(p, resource, scope) for each in runs for p in each]
        writer.write(Batch(), build=lambda: spans_to_batch(spans, writer, 7, "Worker 'b'"))
    finally:
        writer.close()
    writer = Writer(by_bulk)
    ranged = []
    try:
        for run in runs:
            def build(run: Any = run) -> Batch:
                batch = numbered_batch(run, writer, 7, "Worker 'b'", resource, scope)
                ranged.append(sorted(key for key, *_ in batch.span_attr_ranges))
                return batch

            writer.write(Batch(), build=build)
    finally:
        writer.close()
    assert ranged == [["messaging.destination.name", "process.pid"], ["process.pid"]]
    expected, got = table_rows(by_batch), table_rows(by_bulk)
    assert got == expected
    assert len(expected["span_attrs"]) == 200 + 199 + 200
