"""Trace DB benchmark: ingest rate against plain SQLite, and query times on a large DB.

    python benchmarks/tracedb/bench_tracedb.py                 # 1,000,000-span DB
    python benchmarks/tracedb/bench_tracedb.py --spans 100000  # quicker

Ingest (fresh DB files, batches of 512 as the SDK's BatchSpanProcessor sends them, rounds
interleaved, medians):
  * ceiling, spans only: plain ``sqlite3`` executemany of the exporter's own span rows
    (pre-built) into the same ``spans`` table with its indexes, one transaction per batch;
  * ceiling, all rows: the same, plus every other row the exporter writes for those spans
    (events, links, attribute index rows, trace summaries);
  * ``TraceDBSpanExporter.export()`` of pre-built SDK spans (conversion + all the above);
  * the SDK end to end: spans made with a tracer, through a BatchSpanProcessor into the
    exporter, against the same pipeline with an exporter that drops everything.

Relay (``--only relay``): a forked child hands its spans to the DB owner's relay (this
process), in batches of 64 and in batches of 8 (a short-lived child at exit): the time
the child spends per ``export()``, and the spans stored per second end to end (until the
owner's shutdown has written everything).

Queries, on a DB from ``_gen.cached_db`` (made once through the exporter's writer, cached
under /tmp): one trace by id as a tree, pages of 50 traces with each filter, spans by an
indexed attribute, events around an instant; and the file's bytes per span.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _gen import cached_db

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter, _schema
from procscope.exporters.tracedb._exporter import spans_to_batch
from procscope.exporters.tracedb._writer import (
    EVENT_ATTR_INSERT,
    EVENT_INSERT,
    LINK_INSERT,
    SPAN_ATTR_INSERT,
    SPAN_INSERT,
    TRACE_UPSERT,
    Writer,
    summarise_traces,
)

BATCH = 512
TRACE_BY_ID_TARGET_MS = 5.0
PAGE_TARGET_MS = 50.0


# ---------------------------------------------------------------------------- spans


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def make_spans(tracer: Any, count: int) -> None:
    """Traces like a queue-based program's: a job, a send, a receive, a work span with a
    state event; messaging attributes as procscope's messaging instrumentor sets them."""
    for job in range(count // 4):
        with tracer.start_as_current_span("handle request", attributes={"request.id": job}):
            msg = {
                "messaging.system": "python_multiprocessing_queue",
                "messaging.destination.name": "jobs",
                "messaging.message.id": format(job, "016x"),
                "messaging.message.body.size": 120,
                "thread.id": 100,
                "thread.name": "MainThread",
                "process.pid": 4000,
            }
            with tracer.start_as_current_span("put jobs", kind=SpanKind.PRODUCER, attributes=msg):
                pass
            with tracer.start_as_current_span("get jobs", kind=SpanKind.CONSUMER, attributes=msg):
                with tracer.start_as_current_span("work") as work:
                    work.add_event(
                        "procscope.state.change",
                        {"procscope.state.object": f"account-{job % 100}",
                         "procscope.state.seq": job, "procscope.state.fields": ("balance",)},
                    )  # fmt: skip


def prebuilt_spans(count: int) -> list[ReadableSpan]:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    collect = _Collect()
    provider.add_span_processor(collect)
    make_spans(provider.get_tracer("bench"), count)
    provider.shutdown()
    return collect.spans


# ---------------------------------------------------------------------------- ingest


def fresh_db(folder: str) -> sqlite3.Connection:
    """A DB with the trace DB's tables and indexes, opened as the exporter opens it."""
    path = os.path.join(folder, f"ceiling-{time.perf_counter_ns()}.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for statement in (*_schema.TABLES, *_schema.INDEXES):
        conn.execute(statement)
    return conn


def rows_of(spans: list[ReadableSpan], folder: str) -> list[dict[str, list[Any]]]:
    """Per batch, the exact rows export() writes, with final row ids."""
    writer = Writer(os.path.join(folder, "rows.db"))
    batches = []
    span_base = event_base = 1
    for start in range(0, len(spans), BATCH):
        batch = spans_to_batch(spans[start : start + BATCH], writer, 4000, "MainProcess")
        span_rows = [(r[0] + span_base, *r[1:]) for r in batch.spans]
        batches.append(
            {
                "spans": span_rows,
                "events": [(e[0] + event_base, e[1] + span_base, *e[2:]) for e in batch.events],
                "links": [(r[0] + span_base, *r[1:]) for r in batch.links],
                "span_attrs": [(k, v, pk + span_base) for k, v, pk in batch.span_attrs],
                "event_attrs": [(k, v, pk + event_base) for k, v, pk in batch.event_attrs],
                "traces": list(summarise_traces(span_rows)),
            }
        )
        span_base += len(batch.spans)
        event_base += len(batch.events)
    writer.close()
    return batches


def ceiling_spans_only(batches: list[dict[str, list[Any]]], folder: str) -> float:
    conn = fresh_db(folder)
    started = time.perf_counter()
    for batch in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(SPAN_INSERT, batch["spans"])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return sum(len(b["spans"]) for b in batches) / elapsed


def ceiling_all_rows(batches: list[dict[str, list[Any]]], folder: str) -> float:
    conn = fresh_db(folder)
    started = time.perf_counter()
    for batch in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(SPAN_INSERT, batch["spans"])
        conn.executemany(EVENT_INSERT, batch["events"])
        conn.executemany(LINK_INSERT, batch["links"])
        conn.executemany(SPAN_ATTR_INSERT, batch["span_attrs"])
        conn.executemany(EVENT_ATTR_INSERT, batch["event_attrs"])
        conn.executemany(TRACE_UPSERT, batch["traces"])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return sum(len(b["spans"]) for b in batches) / elapsed


def via_export(spans: list[ReadableSpan], folder: str) -> float:
    exporter = TraceDBSpanExporter(os.path.join(folder, f"export-{time.perf_counter_ns()}.db"))
    exporter.export(spans[:1])  # open and create the file outside the timing
    rest = spans[1:]
    started = time.perf_counter()
    for start in range(0, len(rest), BATCH):
        assert exporter.export(rest[start : start + BATCH]) is SpanExportResult.SUCCESS
    elapsed = time.perf_counter() - started
    exporter.shutdown()
    return len(rest) / elapsed


def via_sdk(count: int, exporter: SpanExporter) -> float:
    """Spans/s made by a tracer and delivered through a BatchSpanProcessor (flush included)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=count + 1, max_export_batch_size=BATCH)
    )
    tracer = provider.get_tracer("bench")
    with tracer.start_as_current_span("warm-up"):
        pass
    provider.force_flush()
    started = time.perf_counter()
    make_spans(tracer, count)
    provider.force_flush()
    elapsed = time.perf_counter() - started
    provider.shutdown()
    return count / elapsed


def bench_ingest(count: int, rounds: int) -> list[tuple[str, float, str]]:
    spans = prebuilt_spans(count)
    results: dict[str, list[float]] = {
        k: [] for k in ("ceiling_spans", "ceiling_all", "export", "sdk_drop", "sdk_tracedb")
    }
    with tempfile.TemporaryDirectory() as folder:
        batches = rows_of(spans, folder)
        for _ in range(rounds):  # interleaved: each round runs every variant once
            results["ceiling_spans"].append(ceiling_spans_only(batches, folder))
            results["ceiling_all"].append(ceiling_all_rows(batches, folder))
            results["export"].append(via_export(spans, folder))
            results["sdk_drop"].append(via_sdk(count, _Drop()))
            results["sdk_tracedb"].append(
                via_sdk(count, TraceDBSpanExporter(os.path.join(folder, f"sdk-{_}.db")))
            )
    med = {k: statistics.median(v) for k, v in results.items()}
    return [
        ("plain executemany, span rows only (ceiling)", med["ceiling_spans"], "1.00"),
        (
            "plain executemany, all rows the exporter writes",
            med["ceiling_all"],
            f"{med['ceiling_all'] / med['ceiling_spans']:.2f}",
        ),
        (
            "TraceDBSpanExporter.export(), pre-built spans",
            med["export"],
            f"{med['export'] / med['ceiling_spans']:.2f} "
            f"(of all-rows ceiling: {med['export'] / med['ceiling_all']:.2f})",
        ),
        ("SDK tracer + BatchSpanProcessor, exporter dropping all", med["sdk_drop"], "-"),
        (
            "SDK tracer + BatchSpanProcessor + TraceDBSpanExporter",
            med["sdk_tracedb"],
            f"{med['sdk_tracedb'] / med['sdk_drop']:.2f} of dropping",
        ),
    ]


# ---------------------------------------------------------------------------- relay


def _relay_child(
    exporter: TraceDBSpanExporter, spans: list[ReadableSpan], size: int, out: Any
) -> None:
    started = time.perf_counter()
    for start in range(0, len(spans), size):
        exporter.export(spans[start : start + size])
    out.send(time.perf_counter() - started)


def via_relay(spans: list[ReadableSpan], size: int, folder: str) -> tuple[float, float]:
    """(us the child spends per batch, spans stored per second end to end)."""
    owner = TraceDBSpanExporter(os.path.join(folder, f"relay-{time.perf_counter_ns()}.db"))
    owner.export(spans[:1])  # the owner has the DB open and its relay running
    rest = spans[1:]
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    started = time.perf_counter()
    child = ctx.Process(target=_relay_child, args=(owner, rest, size, send))
    child.start()
    in_child = receive.recv()
    child.join()
    owner.shutdown()  # whatever the relay still holds is written before this returns
    elapsed = time.perf_counter() - started
    with TraceDB(owner.path) as db:
        assert db.span_count() == len(spans), (db.span_count(), len(spans))
    batches = -(-len(rest) // size)
    return in_child / batches * 1e6, len(rest) / elapsed


def bench_relay(count: int, rounds: int) -> list[tuple[str, float, float]]:
    spans = prebuilt_spans(count)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size, some in ((64, spans), (8, spans[:2001])):
            got = [via_relay(some, size, folder) for _ in range(rounds)]
            rows.append(
                (
                    f"fork child -> owner's relay, batches of {size}",
                    statistics.median(g[0] for g in got),
                    statistics.median(g[1] for g in got),
                )
            )
    return rows


def print_relay(count: int, rounds: int) -> None:
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    if not hasattr(socket, "SO_PASSCRED"):
        print("relay: Linux only")
        return
    print(f"\nRelay: {count:,} spans (2,000 in batches of 8), median of {rounds}")
    relay = bench_relay(count, rounds)
    width = max(len(r[0]) for r in relay)
    print(f"{'path':<{width}}  {'us/batch in child':>17}  {'stored spans/s':>14}")
    for label, per_batch, rate in relay:
        print(f"{label:<{width}}  {per_batch:>17,.0f}  {rate:>14,.0f}")


# ---------------------------------------------------------------------------- queries


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median ms, p95 ms, last result) over ``repeat`` calls."""
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], result


def bench_queries(n_spans: int) -> tuple[list[tuple[str, float, float, str]], dict[str, Any]]:
    path, info = cached_db(n_spans)
    rows: list[tuple[str, float, float, str]] = []
    mid = (info["start_ns"] + info["end_ns"]) // 2
    with TraceDB(path) as db:
        ids = info["sample_trace_ids"]
        cursor = iter(ids * 10)

        def trace_by_id() -> Any:
            return db.trace(next(cursor))

        med, p95, tree = timed(trace_by_id, min(400, len(ids) * 10))
        assert tree is not None and tree.summary.span_count == 6
        rows.append(("trace(id): one trace as a tree", med, p95, f"<= {TRACE_BY_ID_TARGET_MS} ms"))
        worker = info["workers"][0]
        message_id = db.spans(name="put jobs", start_ns=mid, limit=1)[0].attributes[
            "messaging.message.id"
        ]
        pages: list[tuple[str, Callable[[], Any]]] = [
            ("traces(): newest 50", lambda: db.traces(limit=50)),
            ("traces(): 50 from a time range", lambda: db.traces(start_ns=mid, limit=50)),
            ("traces(): 50 with errors", lambda: db.traces(errors_only=True, limit=50)),
            ("traces(): 50 by root name", lambda: db.traces(name="handle request", limit=50)),
            ("traces(): 50 lasting >= 3.9 ms", lambda: db.traces(min_duration_ns=3_900_000)),
            (
                "traces(): 50 with attribute (indexed)",
                lambda: db.traces(attributes={"process.pid": worker["pid"]}, limit=50),
            ),
            (
                "traces(): 50 by a message id (selective)",
                lambda: db.traces(attributes={"messaging.message.id": message_id}, limit=50),
            ),
            (
                "traces(): page 100 (offset 5,000)",
                lambda: db.traces(limit=50, offset=5000),
            ),
        ]
        for label, query in pages:
            med, p95, result = timed(query, 30)
            assert result, label
            rows.append((label, med, p95, f"<= {PAGE_TARGET_MS:.0f} ms"))
        med, p95, result = timed(
            lambda: db.spans(attributes={"process.pid": worker["pid"]}, limit=100), 30
        )
        assert len(result) == 100
        rows.append(("spans(): 100 by indexed attribute", med, p95, "-"))
        med, p95, result = timed(lambda: db.spans(start_ns=mid, end_ns=mid + 20_000_000), 30)
        rows.append(("spans(): a 20 ms time range", med, p95, "-"))
        med, p95, result = timed(lambda: db.events_around(mid, 5_000_000), 30)
        assert result
        rows.append(("events_around(): +/- 5 ms", med, p95, "-"))
        main_name = info["main"]["name"]
        for label, between in (
            ("messages(): 50 newest, main -> a worker", (main_name, worker["name"])),
            ("messages(): 50 newest, a worker -> main", (worker["name"], main_name)),
        ):
            med, p95, result = timed(
                lambda b=between: db.messages(sender=b[0], receiver=b[1], limit=50, newest=True),
                30,
            )
            assert len(result) == 50, label
            rows.append((label, med, p95, f"<= {PAGE_TARGET_MS:.0f} ms"))
        spans = db.span_count()
    size = os.path.getsize(path)
    return rows, {"path": path, "spans": spans, "bytes": size, "bytes_per_span": size / spans}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in the query DB")
    parser.add_argument("--ingest-spans", type=int, default=20_000, help="spans per ingest run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved ingest rounds")
    parser.add_argument("--only", choices=("relay",), help="run this case alone")
    args = parser.parse_args(argv)
    if args.only == "relay":
        print_relay(args.ingest_spans, args.rounds)
        return 0

    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(f"\nIngest: {args.ingest_spans:,} spans, batches of {BATCH}, median of {args.rounds}")
    ingest = bench_ingest(args.ingest_spans, args.rounds)
    width = max(len(r[0]) for r in ingest)
    print(f"{'path':<{width}}  {'spans/s':>10}  ratio")
    for label, rate, ratio in ingest:
        print(f"{label:<{width}}  {rate:>10,.0f}  {ratio}")

    rows, facts = bench_queries(args.spans)
    print(f"\nQueries on {facts['spans']:,} spans ({facts['path']})")
    width = max(len(r[0]) for r in rows)
    print(f"{'query':<{width}}  {'median ms':>9}  {'p95 ms':>7}  target")
    for label, med, p95, target in rows:
        print(f"{label:<{width}}  {med:>9.2f}  {p95:>7.2f}  {target}")
    print(
        f"\nDB file: {facts['bytes']:,} bytes, {facts['bytes_per_span']:.0f} bytes per span "
        "(events, links, indexes and trace summaries included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
