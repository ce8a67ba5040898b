"""A realistic trace DB of any size, for the query benchmarks (ours and the other areas').

    from _gen import cached_db            # with benchmarks/tracedb on sys.path
    path, info = cached_db(1_000_000)      # generated once, then reused from /tmp

The rows go in through the exporter's own writer (``Writer.write`` of ``Batch`` rows, the
code path of ``TraceDBSpanExporter.export`` minus building rows from SDK span objects),
so the file, its side tables and its trace summaries are exactly what a program leaves.

The simulated program: one main process and 8 worker processes (lifecycle spans: spawn,
process, exit, with ``procscope.lifecycle.*``/``process.*`` attributes), and job traces of
6 spans each: ``handle request`` (main) -> ``put jobs`` (producer) -> ``get jobs`` (consumer, in
a worker, linked to the producer) -> ``work`` (with 1-2 ``procscope.state.change``
events on one of 100 ``account-N`` objects; 5% fail with an ``exception`` event) ->
``put results`` -> ``get results`` (main), named as the messaging instrumentor names
them (``{messaging.operation.name} {destination}``). Attribute names are
those of docs/semantic-conventions.md (messaging.* per OTel, procscope.messaging.*,
procscope.state.*, procscope.lifecycle.*).

``info`` (also saved as JSON beside the DB) names what queries need: pids, process names,
queues, object names, the time range, and a sample of trace ids.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from procscope.exporters.tracedb import _schema
from procscope.exporters.tracedb._writer import Batch, Writer, encode_attributes

GENERATOR_VERSION = 2
WORKERS = 8
OBJECTS = 100
QUEUES = ("jobs", "results")
MAIN_PID = 40_000
BATCH_SPANS = 30_000
SPANS_PER_JOB = 6
JOB_EVERY_NS = 2_000_000  # a job every 2 ms of simulated time

PRODUCER, CONSUMER, INTERNAL = 3, 4, 0
ERROR = 2


def db_file(n_spans: int, seed: int = 0, folder: str = "/tmp") -> str:
    """Where :func:`cached_db` keeps a DB of this size (keyed by the schema version)."""
    return os.path.join(
        folder,
        f"procscope-bench-tracedb-s{_schema.SCHEMA_VERSION}-g{GENERATOR_VERSION}"
        f"-n{n_spans}-r{seed}.db",
    )


def cached_db(n_spans: int = 1_000_000, seed: int = 0, *, quiet: bool = False) -> tuple[str, dict]:
    """A generated DB of about ``n_spans`` spans: made once, then reused."""
    path = db_file(n_spans, seed)
    info_path = path + ".json"
    if os.path.exists(path) and os.path.exists(info_path):
        with open(info_path) as handle:
            return path, json.load(handle)
    for suffix in ("", "-wal", "-shm", ".json", ".tmp", ".tmp-wal", ".tmp-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    started = time.perf_counter()
    if not quiet:
        print(f"generating {n_spans:,} spans into {path} (once; cached)...", flush=True)
    info = generate(path + ".tmp", n_spans, seed=seed)
    os.replace(path + ".tmp", path)
    with open(info_path, "w") as handle:
        json.dump(info, handle)
    if not quiet:
        print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path, info


def _sid(rng: random.Random) -> int:
    return rng.getrandbits(63) or 1  # already in SQLite's signed range


def generate(path: str, n_spans: int, *, seed: int = 0) -> dict[str, Any]:
    """Write about ``n_spans`` spans of the simulated program into a new DB at ``path``."""
    rng = random.Random(seed)
    writer = Writer(path, busy_timeout_s=30)
    conn = writer.conn
    resource = Resource.create({"service.name": "bench-app", "process.pid": MAIN_PID})
    rid = writer.resource_id(resource)
    lifecycle = writer.scope_id(
        InstrumentationScope("procscope.instrumentation.lifecycle", "0.1.0")
    )
    messaging = writer.scope_id(
        InstrumentationScope("procscope.instrumentation.messaging", "0.1.0")
    )
    state = writer.scope_id(InstrumentationScope("procscope.instrumentation.state", "0.1.0"))
    workers = [(MAIN_PID + 1 + k, f"worker-{k + 1}") for k in range(WORKERS)]
    n_jobs = max(1, (n_spans - 3 * WORKERS) // SPANS_PER_JOB)
    t0 = 1_750_000_000 * 10**9
    t_end = t0 + (n_jobs + 10) * JOB_EVERY_NS
    sample_trace_ids: list[str] = []
    seqs = [0] * OBJECTS

    batch = Batch()
    local_pk = 0
    local_event = 0

    def span(
        trace_id: bytes, span_id: int, parent: int | None, name: str, kind: int, start: int,
        end: int, status: int, description: str | None, attributes: dict[str, Any], scope: int,
        pid: int, process_name: str,
    ) -> int:  # fmt: skip
        nonlocal local_pk
        index = local_pk
        local_pk += 1
        batch.spans.append(
            (index, trace_id, span_id, parent, name, kind, start, end, status, description,
             encode_attributes(attributes), rid, scope, pid, process_name)
        )  # fmt: skip
        for key in _schema.INDEXED_SPAN_ATTRIBUTES:
            value = attributes.get(key)
            if value is not None:
                batch.span_attrs.append((key, value, index))
        return index

    def event(span_index: int, name: str, at: int, attributes: dict[str, Any]) -> None:
        nonlocal local_event
        batch.events.append((local_event, span_index, name, at, encode_attributes(attributes)))
        for key in _schema.INDEXED_EVENT_ATTRIBUTES:
            value = attributes.get(key)
            if value is not None:
                batch.event_attrs.append((key, value, local_event))
        local_event += 1

    def flush() -> None:
        nonlocal batch, local_pk, local_event
        if batch.spans:
            writer.write(batch)
        batch = Batch()
        local_pk = local_event = 0

    # Lifecycle: each worker is spawned by main, runs for the whole program, is reaped.
    for pid, pname in workers:
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        spawn_id, run_id = _sid(rng), _sid(rng)
        common = {"procscope.lifecycle.kind": "process", "process.pid": pid,
                  "process.parent_pid": MAIN_PID, "procscope.process.name": pname,
                  "procscope.process.start_method": "fork"}  # fmt: skip
        span(trace_id, spawn_id, None, f"spawn {pname}", INTERNAL, t0, t0 + 900_000, 0, None,
             {**common, "procscope.lifecycle.role": "spawn", "thread.name": "MainThread"},
             lifecycle, MAIN_PID, "MainProcess")  # fmt: skip
        span(trace_id, run_id, spawn_id, f"process {pname}", INTERNAL, t0 + 1_000_000, t_end,
             0, None, {**common, "procscope.lifecycle.role": "run", "process.exit.code": 0},
             lifecycle, pid, pname)  # fmt: skip
        span(trace_id, _sid(rng), spawn_id, f"exit {pname}", INTERNAL, t_end + 1000,
             t_end + 1000, 0, None,
             {**common, "procscope.lifecycle.role": "reap", "process.exit.code": 0},
             lifecycle, MAIN_PID, "MainProcess")  # fmt: skip

    sample_every = max(1, n_jobs // 500)
    for job in range(n_jobs):
        start = t0 + 5_000_000 + job * JOB_EVERY_NS + rng.randrange(500_000)
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        if job % sample_every == 0:
            sample_trace_ids.append(trace_id.hex())
        wpid, wname = workers[rng.randrange(WORKERS)]
        obj = rng.randrange(OBJECTS)
        failed = rng.random() < 0.05
        root, send, recv, work, send2 = (_sid(rng) for _ in range(5))
        size = 100 + rng.randrange(2000)
        end = start + 1_000_000 + rng.randrange(3_000_000)
        span(trace_id, root, None, "handle request", INTERNAL, start, end, ERROR if failed else 0,
             "job failed" if failed else None, {"request.id": job, "thread.id": 100,
             "thread.name": "MainThread"}, lifecycle, MAIN_PID, "MainProcess")  # fmt: skip
        queue = QUEUES[0]
        msg = {"messaging.system": "python_multiprocessing_queue",
               "messaging.destination.name": queue,
               "procscope.messaging.queue.type": "multiprocessing.Queue",
               "messaging.message.id": format(send, "016x"),
               "messaging.message.body.size": size}  # fmt: skip
        s = start + 50_000
        span(trace_id, send, root, f"put {queue}", PRODUCER, s, s + 30_000, 0, None,
             {**msg, "messaging.operation.type": "send", "messaging.operation.name": "put",
              "thread.id": 100, "thread.name": "MainThread", "process.pid": MAIN_PID},
             messaging, MAIN_PID, "MainProcess")  # fmt: skip
        r = s + 200_000 + rng.randrange(300_000)
        recv_index = span(
            trace_id, recv, send, f"get {queue}", CONSUMER, r - 100_000, r, 0, None,
            {**msg, "messaging.operation.type": "receive", "messaging.operation.name": "get",
             "thread.id": wpid * 10, "thread.name": "MainThread", "process.pid": wpid,
             "procscope.messaging.sender.pid": MAIN_PID,
             "procscope.messaging.wait_time": (r - s) / 1e9},
            messaging, wpid, wname,
        )  # fmt: skip
        batch.links.append((recv_index, trace_id, send, None))
        w0, w1 = r + 10_000, r + 10_000 + rng.randrange(2_000_000)
        work_index = span(trace_id, work, recv, "work", INTERNAL, w0, w1,
                          ERROR if failed else 0, "ValueError: bad input" if failed else None,
                          {"job": job}, state, wpid, wname)  # fmt: skip
        for k in range(1 + (job % 2)):
            seqs[obj] += 1
            event(work_index, "procscope.state.change", w0 + 1000 + k * 5000,
                  {"procscope.state.object": f"account-{obj}", "procscope.state.class":
                   "bank.Account", "procscope.state.seq": seqs[obj],
                   "procscope.state.method": "deposit", "procscope.state.fields": ["balance"],
                   "procscope.state.values": [str(seqs[obj] * 10)]})  # fmt: skip
        if failed:
            event(work_index, "exception", w1, {
                "exception.type": "ValueError", "exception.message": "bad input",
                "exception.stacktrace": "Traceback..."})  # fmt: skip
        queue = QUEUES[1]
        msg = {**msg, "messaging.destination.name": queue,
               "messaging.message.id": format(send2, "016x")}  # fmt: skip
        span(trace_id, send2, work, f"put {queue}", PRODUCER, w1, w1 + 20_000, 0, None,
             {**msg, "messaging.operation.type": "send", "messaging.operation.name": "put",
              "thread.id": wpid * 10, "thread.name": "MainThread", "process.pid": wpid},
             messaging, wpid, wname)  # fmt: skip
        recv_index = span(
            trace_id, _sid(rng), send2, f"get {queue}", CONSUMER, w1 + 30_000, w1 + 90_000,
            0, None,
            {**msg, "messaging.operation.type": "receive", "messaging.operation.name": "get",
             "thread.id": 100, "thread.name": "MainThread", "process.pid": MAIN_PID,
             "procscope.messaging.sender.pid": wpid},
            messaging, MAIN_PID, "MainProcess",
        )  # fmt: skip
        batch.links.append((recv_index, trace_id, send2, None))
        if local_pk >= BATCH_SPANS:
            flush()
    flush()
    spans_written = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.close()
    return {
        "n_spans": spans_written,
        "n_traces": n_jobs + WORKERS,
        "start_ns": t0,
        "end_ns": t_end + 1000,
        "main": {"pid": MAIN_PID, "name": "MainProcess"},
        "workers": [{"pid": pid, "name": name} for pid, name in workers],
        "queues": list(QUEUES),
        "objects": [f"account-{k}" for k in range(OBJECTS)],
        "sample_trace_ids": sample_trace_ids,
        "schema_version": _schema.SCHEMA_VERSION,
        "generator_version": GENERATOR_VERSION,
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    db, meta = cached_db(count)
    print(db, meta["n_spans"], "spans", os.path.getsize(db), "bytes")
