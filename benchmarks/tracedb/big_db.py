"""A big, realistic trace DB (1,000,000 spans by default) for tests and benchmarks.

    from big_db import build_big_db, cached_big_db  # with benchmarks/tracedb on sys.path
    info = build_big_db("/tmp/big.db")    # a new file; returns what is in it
    path = cached_big_db()                # built once, then reused (info in path + ".json")

    python benchmarks/tracedb/big_db.py [PATH] [--spans N]

Tests get it from the session fixture ``big_db`` (tests/conftest.py), built once per
schema version and version of this file, and cached under the system temp dir.

The spans go in through the exporter's own path: SDK ``ReadableSpan`` objects, turned
into rows by ``spans_to_batch`` (what ``TraceDBSpanExporter.export`` does) and written by
the exporter's ``Writer``, one batch per process as each process exports its own. So the
file follows the schema as it changes (new columns, side tables, summaries).

The simulated program, ``RUNS`` runs of it one after the other (``procscope.run.id`` on
every resource), each with ``1 + DISPATCHERS + DISPATCHERS * WORKERS_PER_DISPATCHER`` (40)
processes:

* ``MainProcess`` runs one asyncio task per order (``task Task-N``, a lifecycle span, the
  root of the order's trace): ``put jobs-D`` to one of three dispatcher processes, and
  later ``get results`` (on the main thread) of the order's result;
* ``dispatcher-D`` (spawned by main): ``get jobs-D``, ``put work-D``;
* ``worker-D-K`` (spawned by its dispatcher, two threads ``fetcher-1``/``fetcher-2``):
  ``get work-D`` on a fetcher thread, ``Account.apply`` (a state span with a
  ``procscope.state.change`` event of the traced object ``account-N``, owned by one worker;
  a ``start`` snapshot first and a ``periodic`` one every 100 changes), ``put results``.

Every receive is a child of its send and links to it, with the sender's pid and thread.
About 2% of ``Account.apply`` calls raise (``exception`` event, status ERROR). In each run
two workers crash (an exception on their ``process`` span, exit code 1) and one is killed
by SIGKILL (no ``process`` span; the dispatcher's ``exit`` span has signal 9); the message
each was sent last is never received. The second run's main process exits with code 1.
Attribute names are those of docs/semantic-conventions.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import glob
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from procscope.exporters.tracedb import _schema
from procscope.exporters.tracedb._convert import spans_to_batch
from procscope.exporters.tracedb._relay import merged
from procscope.exporters.tracedb._writer import Batch, Writer

RUNS = 3
DISPATCHERS = 3
WORKERS_PER_DISPATCHER = 12
OBJECTS = 100
SPANS_PER_ORDER = 8
ORDER_EVERY_NS = 1_000_000  # an order every millisecond of simulated time
SNAPSHOT_EVERY = 100
FAIL_RATE = 0.02
BATCH = 4096  # spans per export, as procscope's pipeline exports into the trace DB
TRANSACTION = 65_536  # spans per transaction: batches of several processes together
#: The first run starts here (UTC); each run starts an hour after the previous one ends.
START = _dt.datetime(2026, 12, 1, 10, 0, tzinfo=_dt.timezone.utc)

_INDEX_NAME = re.compile(r"INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_QUEUE = {"messaging.system": "python_multiprocessing_queue",
          "procscope.messaging.queue.type": "Queue"}  # fmt: skip
_SCOPES = {
    name: InstrumentationScope(f"procscope.instrumentation.{name}", "0.1.0")
    for name in ("lifecycle", "messaging", "state")
}


class _Process:
    """One simulated process: its identity and the spans it has yet to export."""

    def __init__(self, run_id: str, pid: int, name: str, parent: _Process | None) -> None:
        self.pid, self.name, self.parent = pid, name, parent
        attributes: dict[str, Any] = {
            "service.name": "orders-app",
            "process.pid": pid,
            "process.parent_pid": parent.pid if parent else pid - 1,
            "process.command": "python app.py",
            "procscope.run.id": run_id,
        }
        if parent is None:  # the process that started the run names its command
            attributes["procscope.run.command"] = "python app.py --orders 40000"
        self.resource = Resource(attributes)
        self.spans: list[ReadableSpan] = []
        self.thread_ids = {"MainThread": pid}
        self.process_span: SpanContext | None = None
        self.spawn: tuple[SpanContext, int] | None = None
        self.ends_at: int | None = None  # crashed or killed at
        self.sent_last = False  # its last order, never received, was sent


class _Generator:
    def __init__(self, writer: Writer, seed: int) -> None:
        self.writer = writer
        self.rng = random.Random(seed)
        self.spans = 0
        self.events = 0
        self.pending: list[Batch] = []
        self.pending_spans = 0

    def ids(self) -> int:
        return self.rng.getrandbits(64) or 1

    def context(self, trace_id: int) -> SpanContext:
        return SpanContext(trace_id, self.ids(), False, _SAMPLED)

    def emit(
        self,
        proc: _Process,
        ctx: SpanContext,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        start: int,
        end: int,
        attributes: dict[str, Any],
        scope: str,
        *,
        events: tuple[Event, ...] = (),
        links: tuple[Link, ...] = (),
        error: str | None = None,
    ) -> None:
        status = Status(StatusCode.ERROR, error) if error else _OK
        proc.spans.append(
            ReadableSpan(
                name=name, context=ctx, parent=parent, resource=proc.resource,
                attributes=attributes, events=events, links=links, kind=kind, status=status,
                start_time=start, end_time=end, instrumentation_scope=_SCOPES[scope],
            )
        )  # fmt: skip
        self.spans += 1
        self.events += len(events)
        if len(proc.spans) >= BATCH:
            self.flush(proc)

    def flush(self, proc: _Process) -> None:
        """Export a process's batch. Batches are written several in one transaction, as
        the DB owner writes the batches children queued together (``_relay.merged``):
        each commit rewrites the index pages it dirtied, and 4,096-span transactions
        made the build twice as long."""
        if proc.spans:
            batch = spans_to_batch(proc.spans, self.writer, proc.pid, proc.name)
            self.pending.append(batch)
            self.pending_spans += len(batch.spans)
            proc.spans = []
        if self.pending_spans >= TRANSACTION:
            self.commit()

    def commit(self) -> None:
        if self.pending:
            self.writer.write(merged(self.pending))
        self.pending, self.pending_spans = [], 0


def _thread(proc: _Process, name: str) -> dict[str, Any]:
    return {"thread.id": proc.thread_ids[name], "thread.name": name}


def _lifecycle(proc: _Process, child: _Process, role: str, **extra: Any) -> dict[str, Any]:
    return {
        **_thread(proc, "MainThread"), "procscope.lifecycle.kind": "process",
        "procscope.lifecycle.role": role, "process.pid": child.pid,
        "process.parent_pid": child.parent.pid if child.parent else 0,
        "procscope.process.name": child.name, "procscope.process.start_method": "spawn",
        **extra,
    }  # fmt: skip


def _exception(at: int, kind: str, message: str, where: str) -> Event:
    return Event(
        "exception",
        {
            "exception.type": kind,
            "exception.message": message,
            "exception.stacktrace": (
                "Traceback (most recent call last):\n"
                f'  File "app.py", line 88, in {where}\n    account.apply(order)\n'
                f'  File "app.py", line 41, in apply\n    raise {kind}(msg)\n'
                f"{kind}: {message}\n"
            ),
            "exception.escaped": True,
        },
        at,
    )


def _spawn(gen: _Generator, parent: _Process, child: _Process, at: int, target: str) -> None:
    """The parent's ``spawn`` span; the child's ``process`` span follows in the same trace."""
    trace_id = gen.rng.getrandbits(128)
    ctx = gen.context(trace_id)
    gen.emit(parent, ctx, None, f"spawn {child.name}", SpanKind.INTERNAL, at, at + 900_000,
             _lifecycle(parent, child, "spawn", **{"procscope.process.target": target,
                                                   "procscope.process.daemon": False}),
             "lifecycle")  # fmt: skip
    child.spawn = (ctx, trace_id)
    child.process_span = gen.context(trace_id)


def _end_process(gen: _Generator, child: _Process, start: int, end: int, *,
                 code: int | None, signal: int | None = None,
                 crash: Event | None = None) -> None:  # fmt: skip
    """The child's ``process`` span (unless killed) and its parent's ``exit`` span."""
    assert child.spawn is not None and child.process_span is not None and child.parent
    spawn_ctx, trace_id = child.spawn
    ending: dict[str, Any] = {}
    error = None
    if signal is not None:
        ending["procscope.process.exit.signal"] = signal
        error = f"killed by signal {signal}"
    else:
        ending["process.exit.code"] = code
        error = f"exit code {code}" if code else None
    if signal is None:
        gen.emit(child, child.process_span, spawn_ctx, f"process {child.name}",
                 SpanKind.INTERNAL, start, end,
                 {**_lifecycle(child, child, "run", **{"procscope.process.target": "app.serve"}),
                  **ending}, "lifecycle",
                 events=(crash,) if crash else (), error=error)  # fmt: skip
    gen.emit(child.parent, gen.context(trace_id), spawn_ctx, f"exit {child.name}",
             SpanKind.INTERNAL, end + 40_000, end + 60_000,
             _lifecycle(child.parent, child, "reap", **ending), "lifecycle",
             error=error)  # fmt: skip


def _run(gen: _Generator, run: int, orders: int, t0: int) -> dict[str, Any]:
    rng = gen.rng
    run_id = f"{START.strftime('%Y%m%d')}-{run + 1:02d}{rng.getrandbits(32):08x}"
    base = 20_000 + run * 1_000
    main = _Process(run_id, base, "MainProcess", None)
    dispatchers = [
        _Process(run_id, base + 1 + d, f"dispatcher-{d + 1}", main) for d in range(DISPATCHERS)
    ]
    workers: list[list[_Process]] = []
    everyone = [main, *dispatchers]
    for d, dispatcher in enumerate(dispatchers):
        group = []
        for k in range(WORKERS_PER_DISPATCHER):
            pid = base + 10 + d * WORKERS_PER_DISPATCHER + k
            worker = _Process(run_id, pid, f"worker-{d + 1}-{k + 1}", dispatcher)
            worker.thread_ids = {"MainThread": pid, "fetcher-1": pid + 100_000,
                                 "fetcher-2": pid + 200_000}  # fmt: skip
            group.append(worker)
        workers.append(group)
        everyone.extend(group)
    flat = [w for group in workers for w in group]
    end = t0 + (orders + 50) * ORDER_EVERY_NS
    for d, dispatcher in enumerate(dispatchers):
        _spawn(gen, main, dispatcher, t0 + d * 1_000_000, "app.dispatch")
        for k, worker in enumerate(workers[d]):
            _spawn(gen, dispatcher, worker, t0 + 5_000_000 + k * 1_000_000, "app.serve")
    # Two workers crash and one is killed, at different moments of each run.
    crashed = {flat[(run * 5 + 3) % len(flat)]: 0.4, flat[(run * 5 + 20) % len(flat)]: 0.55}
    killed = flat[(run * 7 + 11) % len(flat)]
    for worker, share in crashed.items():
        worker.ends_at = t0 + int(share * orders) * ORDER_EVERY_NS
    killed.ends_at = t0 + int(0.7 * orders) * ORDER_EVERY_NS
    owners = {k: flat[k % len(flat)] for k in range(OBJECTS)}
    accounts_of = {w.pid: [k for k, o in owners.items() if o is w] for w in flat}
    seq = dict.fromkeys(range(OBJECTS), 0)
    snapshots = dict.fromkeys(range(OBJECTS), 0)
    since = dict.fromkeys(range(OBJECTS), 0)
    balance = dict.fromkeys(range(OBJECTS), 0)
    unreceived: list[str] = []
    errors = 0
    for order in range(orders):
        start = t0 + 50_000_000 + order * ORDER_EVERY_NS + rng.randrange(400_000)
        d = order % DISPATCHERS
        dispatcher = dispatchers[d]
        # A worker about to die gets one last order, which it never takes.
        dying = [
            w
            for w in workers[d]
            if w.ends_at is not None and not w.sent_last
            and w.ends_at - 9 * ORDER_EVERY_NS <= start < w.ends_at
        ]  # fmt: skip
        if dying:
            worker = dying[0]
            worker.sent_last = True
        else:
            alive = [w for w in workers[d] if w.ends_at is None or not w.sent_last]
            worker = alive[rng.randrange(len(alive))]
        trace_id = rng.getrandbits(128)
        task, send, recv, fwd, got, apply_, result, back = (
            gen.context(trace_id) for _ in range(SPANS_PER_ORDER)
        )
        task_name = f"Task-{order + 4}"
        main_thread = {**_thread(main, "MainThread"), "procscope.task.name": task_name}
        content = f"{{'order': {order}, 'sku': 'sku-{order % 977}', 'qty': {1 + order % 5}}}"
        message_id = format(send.span_id, "016x")
        sent = start + 40_000
        # Main: the order's task puts it on its dispatcher's queue.
        gen.emit(main, send, task, f"put jobs-{d + 1}", SpanKind.PRODUCER, sent, sent + 20_000,
                 {**_QUEUE, "messaging.operation.type": "send", "messaging.operation.name": "put",
                  "messaging.destination.name": f"jobs-{d + 1}", "messaging.message.id": message_id,
                  **main_thread, "procscope.messaging.content": content}, "messaging")  # fmt: skip
        # Dispatcher: receives it, forwards it to its workers' queue.
        got_at = sent + 150_000 + rng.randrange(200_000)
        receive = {**_QUEUE, "messaging.operation.type": "receive",
                   "messaging.operation.name": "get"}  # fmt: skip
        gen.emit(dispatcher, recv, send, f"get jobs-{d + 1}", SpanKind.CONSUMER, got_at - 50_000,
                 got_at, {**receive, "messaging.destination.name": f"jobs-{d + 1}",
                          "messaging.message.id": message_id, **_thread(dispatcher, "MainThread"),
                          "procscope.messaging.sender.pid": main.pid,
                          "procscope.messaging.sender.thread.id": main.pid,
                          "procscope.messaging.sender.thread.name": "MainThread",
                          "procscope.messaging.wait_time": (got_at - sent) / 1e9},
                 "messaging", links=(Link(send),))  # fmt: skip
        forward_id = format(fwd.span_id, "016x")
        gen.emit(dispatcher, fwd, recv, f"put work-{d + 1}", SpanKind.PRODUCER, got_at + 10_000,
                 got_at + 25_000,
                 {**_QUEUE, "messaging.operation.type": "send", "messaging.operation.name": "put",
                  "messaging.destination.name": f"work-{d + 1}", "messaging.message.id": forward_id,
                  **_thread(dispatcher, "MainThread"), "procscope.messaging.content": content},
                 "messaging")  # fmt: skip
        end_of_task = got_at + 900_000 + rng.randrange(600_000)
        dies_next = worker.sent_last
        if dies_next:
            # The worker dies with this order in its queue: sent, never received.
            unreceived.append(forward_id)
        else:
            fetcher = "fetcher-1" if order % 2 else "fetcher-2"
            taken = got_at + 100_000 + rng.randrange(200_000)
            gen.emit(worker, got, fwd, f"get work-{d + 1}", SpanKind.CONSUMER, taken - 30_000,
                     taken, {**receive, "messaging.destination.name": f"work-{d + 1}",
                             "messaging.message.id": forward_id, **_thread(worker, fetcher),
                             "procscope.messaging.sender.pid": dispatcher.pid,
                             "procscope.messaging.sender.thread.id": dispatcher.pid,
                             "procscope.messaging.sender.thread.name": "MainThread",
                             "procscope.messaging.wait_time": (taken - got_at) / 1e9},
                     "messaging", links=(Link(fwd),))  # fmt: skip
            mine = accounts_of[worker.pid] or [order % OBJECTS]
            obj = mine[order % len(mine)]
            name = f"account-{obj}"
            a0, a1 = taken + 5_000, taken + 60_000 + rng.randrange(300_000)
            events: list[Event] = []
            state = {"procscope.state.object": name, "procscope.state.class": "app.Account"}
            if snapshots[obj] == 0 or since[obj] >= SNAPSHOT_EVERY:
                snapshots[obj] += 1
                seq[obj] += 1
                since[obj] = 0
                events.append(Event("procscope.state.snapshot", {
                    **state, "procscope.state.epoch": f"{name}/{snapshots[obj]}",
                    "procscope.state.seq": seq[obj],
                    "procscope.state.snapshot.reason": "periodic" if snapshots[obj] > 1
                    else "start", "procscope.state.fields": ["balance", "orders"],
                    "procscope.state.values": [str(balance[obj]), str(seq[obj])]}, a0))  # fmt: skip
            failed = rng.random() < FAIL_RATE
            error = None
            if failed:
                errors += 1
                error = "ValueError: insufficient funds"
                events.append(_exception(a1, "ValueError", f"insufficient funds for order {order}",
                                         "handle"))  # fmt: skip
            else:
                old = balance[obj]
                balance[obj] += 1 + order % 7
                seq[obj] += 2
                since[obj] += 1
                events.append(Event("procscope.state.change", {
                    **state, "procscope.state.method": "apply",
                    "procscope.state.epoch": f"{name}/{snapshots[obj]}",
                    "procscope.state.seq": seq[obj],
                    "procscope.state.fields": ["balance", "orders"],
                    "procscope.state.field_seqs": [seq[obj] - 1, seq[obj]],
                    "procscope.state.old_values": [str(old), str(order)],
                    "procscope.state.values": [str(balance[obj]), str(order + 1)]},
                    a0 + 20_000))  # fmt: skip
            gen.emit(worker, apply_, got, "Account.apply", SpanKind.INTERNAL, a0, a1,
                     {**state, "code.function.name": "app.Account.apply"}, "state",
                     events=tuple(events), error=error)  # fmt: skip
            result_id = format(result.span_id, "016x")
            gen.emit(worker, result, apply_, "put results", SpanKind.PRODUCER, a1 + 5_000,
                     a1 + 20_000,
                     {**_QUEUE, "messaging.operation.type": "send",
                      "messaging.operation.name": "put", "messaging.destination.name": "results",
                      "messaging.message.id": result_id, **_thread(worker, fetcher),
                      "procscope.messaging.content":
                      f"{{'order': {order}, 'ok': {not failed}}}"}, "messaging")  # fmt: skip
            back_at = max(a1 + 100_000, end_of_task - 20_000)
            gen.emit(main, back, result, "get results", SpanKind.CONSUMER, back_at - 40_000,
                     back_at, {**receive, "messaging.destination.name": "results",
                               "messaging.message.id": result_id, **main_thread,
                               "procscope.messaging.sender.pid": worker.pid,
                               "procscope.messaging.sender.thread.id":
                               worker.thread_ids[fetcher],
                               "procscope.messaging.sender.thread.name": fetcher,
                               "procscope.messaging.wait_time": (back_at - a1) / 1e9},
                     "messaging", links=(Link(result),))  # fmt: skip
            end_of_task = max(end_of_task, back_at + 10_000)
        gen.emit(main, task, None, f"task {task_name}", SpanKind.INTERNAL, start, end_of_task,
                 {**main_thread, "procscope.lifecycle.kind": "task",
                  "procscope.lifecycle.role": "run", "procscope.task.function": "app.handle_order"},
                 "lifecycle")  # fmt: skip
    # Ends: threads, workers, dispatchers, the program.
    for worker in flat:
        stop = worker.ends_at or end - 5_000_000
        if worker is not killed:
            assert worker.process_span is not None and worker.spawn is not None
            for thread in ("fetcher-1", "fetcher-2"):
                gen.emit(worker, gen.context(worker.spawn[1]), worker.process_span,
                         f"thread {thread}", SpanKind.INTERNAL, t0 + 6_000_000, stop - 100_000,
                         {**_thread(worker, thread), "procscope.lifecycle.kind": "thread",
                          "procscope.lifecycle.role": "run",
                          "procscope.thread.daemon": False}, "lifecycle")  # fmt: skip
        if worker is killed:
            _end_process(gen, worker, t0, stop, code=None, signal=9)
        elif worker in crashed:
            crash = _exception(stop, "RuntimeError", "lost connection to the ledger", "serve")
            _end_process(gen, worker, t0 + 6_000_000, stop, code=1, crash=crash)
        else:
            _end_process(gen, worker, t0 + 6_000_000, stop, code=0)
    for dispatcher in dispatchers:
        _end_process(gen, dispatcher, t0 + 2_000_000, end - 2_000_000, code=0)
    exit_code = 1 if run == 1 else 0
    gen.emit(main, gen.context(rng.getrandbits(128)), None, "end app.py", SpanKind.INTERNAL,
             end, end, {**_thread(main, "MainThread"), "procscope.lifecycle.kind": "program",
                        "procscope.lifecycle.role": "end", "process.pid": main.pid,
                        "process.parent_pid": main.pid - 1, "procscope.process.name": "app.py",
                        "process.exit.code": exit_code},
             "lifecycle", error=f"exit code {exit_code}" if exit_code else None)  # fmt: skip
    for proc in everyone:
        gen.flush(proc)
    gen.commit()
    return {
        "run_id": run_id,
        "start_ns": t0,
        "end_ns": end + 60_000,
        "main": {"pid": main.pid, "name": main.name},
        "dispatchers": [{"pid": p.pid, "name": p.name} for p in dispatchers],
        "workers": [{"pid": p.pid, "name": p.name} for p in flat],
        "crashed": [{"pid": p.pid, "name": p.name} for p in crashed],
        "killed": {"pid": killed.pid, "name": killed.name},
        "exit_code": exit_code,
        "failed_calls": errors,
        "unreceived_message_ids": unreceived,
    }


def build_big_db(path: str | os.PathLike[str], spans: int = 1_000_000, seed: int = 0) -> dict:
    """Write a new trace DB of about ``spans`` spans at ``path`` (which must not exist);
    return what is in it (runs, processes, queues, objects, times; also saved as
    ``path + ".json"``)."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(path)
    writer = Writer(path, busy_timeout_s=30)
    # A bulk build, not a program: no journal (a failed build is deleted), a big page
    # cache, and the secondary indexes made once at the end from sorted data (_schema's
    # own statements), not row by row.
    writer.conn.execute("PRAGMA journal_mode = OFF")
    writer.conn.execute("PRAGMA cache_size = -1048576")  # 1 GiB: the whole file stays in it
    for statement in _schema.INDEXES:
        found = _INDEX_NAME.search(statement)
        if found:
            writer.conn.execute("DROP INDEX IF EXISTS " + found[1])
    gen = _Generator(writer, seed)
    try:
        per_run = max(1, spans // RUNS // SPANS_PER_ORDER)
        t0 = int(START.timestamp()) * 1_000_000_000
        runs = []
        for run in range(RUNS):
            info = _run(gen, run, per_run, t0)
            runs.append(info)
            t0 = info["end_ns"] + 3_600 * 1_000_000_000
        for statement in _schema.INDEXES:
            writer.conn.execute(statement)
        writer.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        writer.close()
    info = {
        "spans": gen.spans,
        "events": gen.events,
        "runs": runs,
        "queues": [f"jobs-{d + 1}" for d in range(DISPATCHERS)]
        + [f"work-{d + 1}" for d in range(DISPATCHERS)]
        + ["results"],
        "objects": [f"account-{k}" for k in range(OBJECTS)],
        "schema_version": _schema.SCHEMA_VERSION,
    }
    with open(path + ".json", "w") as handle:
        json.dump(info, handle, indent=1)
    return info


CACHE_PREFIX = "procscope-big-db-"


def cached_big_db(spans: int = 1_000_000, folder: str | None = None) -> str:
    """The path of a DB made by :func:`build_big_db`, built once and then reused.

    The file is under the system temp dir (or ``folder``), named by the schema version,
    a hash of this file's source and ``spans``, so a change to either makes a new one
    (older ones are deleted then). Built under an exclusive ``fcntl`` lock, so parallel
    test workers wait for one build instead of making their own; built into a temporary
    name and renamed, so a reader never sees half a DB.
    """
    folder = folder or tempfile.gettempdir()
    with open(__file__, "rb") as handle:
        source = hashlib.sha256(handle.read()).hexdigest()[:12]
    stem = f"{CACHE_PREFIX}s{_schema.SCHEMA_VERSION}-{source}-n{spans}"
    path = os.path.join(folder, stem + ".db")
    if os.path.exists(path) and os.path.exists(path + ".json"):
        return path
    with open(os.path.join(folder, CACHE_PREFIX + "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.exists(path) and os.path.exists(path + ".json"):
                return path  # another worker built it while this one waited
            for old in glob.glob(os.path.join(folder, CACHE_PREFIX + "s*")):
                with contextlib.suppress(OSError):
                    os.remove(old)
            building = os.path.join(folder, stem + f".building-{os.getpid()}")
            try:
                build_big_db(building, spans)
                os.replace(building + ".json", path + ".json")
                os.replace(building, path)
            finally:
                for leftover in glob.glob(building + "*"):
                    os.remove(leftover)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", default="big.db")
    parser.add_argument("--spans", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = build_big_db(args.path, args.spans)
    took = time.perf_counter() - started
    size_mb = os.path.getsize(args.path) / 1e6
    print(
        f"{args.path}: {info['spans']:,} spans, {info['events']:,} events, "
        f"{len(info['runs'])} runs, {size_mb:.0f} MB in {took:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
