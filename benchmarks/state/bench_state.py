"""State instrumentor: cost per method call, and state_at on a 1,000,000-span trace DB.

Run: .venv/bin/python benchmarks/state/bench_state.py [--quick] [--spans N] [--calls-only]

1. Cost per call, a 10-field object: ``bump()`` changes one field (an int),
   ``relabel()`` one field to another 16-character string (a repr that is scrubbed for
   secret-looking values: docs/scrubbing.md), ``peek()`` changes nothing. The same class
   body undecorated and decorated with ``@trace_state``, in one run, rounds interleaved,
   median of rounds (a shared 2-core machine is noisy):
     plain             the undecorated class
     recorded, span    traced; the change is an event on the program's current span
     recorded, no span traced; no span current: a span is made for the change (its SDK
                       cost is included: that is what the program pays)
     unsampled         traced, inside a trace that head sampling dropped
     switched off      traced class, instrumentor uninstrumented (level without state)
   Added = median(traced) - median(plain), in wall-clock time and in the thread's CPU
   time (which other processes on a shared machine do not inflate). Goals: <= 3 us per
   recorded change, <= 0.5 us when nothing changed or the trace is not sampled.
2. state_at / state_history on a trace DB of --spans spans (default 1,000,000; generated
   once into /tmp through the exporter's writer, then reused): 100 objects each with a
   history of changes and periodic snapshots, plus one hot object with a tenth of all
   changes. Goal: state_at <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import procscope
from procscope.instrumentation.state import StateInstrumentor


class Counting(SpanProcessor):
    """The cheapest span processor: counts ended spans."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class Plain:
    """Ten fields; bump() and relabel() change one, peek() none."""

    def __init__(self) -> None:
        self.f0 = 0
        self.f1 = 1
        self.f2 = "two"
        self.f3 = 3.0
        self.f4 = None
        self.f5 = True
        self.f6 = 6
        self.f7 = "seven"
        self.f8 = 8
        self.f9 = 9

    def bump(self) -> int:
        self.f0 += 1
        return self.f0

    def relabel(self) -> str:
        self.f7 = "worker-7 waiting" if self.f7 == "worker-7 running" else "worker-7 running"
        return self.f7

    def peek(self) -> int:
        return self.f0 + self.f9


# The same body, decorated: a separate class so both run side by side in one process.
Traced = procscope.trace_state(
    type(
        "Traced", (), {k: v for k, v in vars(Plain).items() if k not in ("__dict__", "__weakref__")}
    )
)


# CPU time of this thread per call, beside the wall time: on a shared machine the wall
# clock also counts the time other processes held the CPU; the thread's CPU time does not.
_cpu: dict[int, float] = {}


def per_call_us(method: Any, calls: int) -> float:
    cpu_started = time.thread_time()
    started = time.perf_counter()
    for _ in range(calls):
        method()
    _cpu[0] = (time.thread_time() - cpu_started) / calls * 1e6
    return (time.perf_counter() - started) / calls * 1e6


def last_cpu_us() -> float:
    """The CPU time per call of the last per_call_us()."""
    return _cpu[0]


def bench_calls(rounds: int, calls: int) -> list[tuple[str, str, float, float, float, float]]:
    provider = TracerProvider()
    provider.add_span_processor(Counting())
    tracer = provider.get_tracer("bench")
    instrumentor = StateInstrumentor()
    instrumentor.instrument(tracer_provider=provider, snapshot_every=100)
    plain, traced = Plain(), Traced()
    unsampled = NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(0))
    )
    samples: dict[tuple[str, str], list[float]] = {}
    cpu_samples: dict[tuple[str, str], list[float]] = {}

    def run(config: str, obj: Any) -> None:
        for method_name in ("bump", "relabel", "peek"):
            method = getattr(obj, method_name)
            if config == "recorded, span":
                # A fresh root span per 1,000 calls: as a program's request spans would be.
                total = cpu_total = 0.0
                for _ in range(max(1, calls // 1000)):
                    with tracer.start_as_current_span("request"):
                        total += per_call_us(method, min(calls, 1000)) * min(calls, 1000)
                        cpu_total += last_cpu_us() * min(calls, 1000)
                value = total / (max(1, calls // 1000) * min(calls, 1000))
                cpu = cpu_total / (max(1, calls // 1000) * min(calls, 1000))
            elif config == "unsampled":
                with trace.use_span(unsampled):
                    value = per_call_us(method, calls)
                cpu = last_cpu_us()
            else:
                value = per_call_us(method, calls)
                cpu = last_cpu_us()
            samples.setdefault((config, method_name), []).append(value)
            cpu_samples.setdefault((config, method_name), []).append(cpu)

    reference = tracer.start_span("reference")

    def sdk_add_event() -> None:
        reference.add_event("e", {"a": 1})

    def sdk_span() -> None:
        tracer.start_span("s").end()

    for _ in range(rounds):
        for label, fn in (("SDK add_event, 1 attribute", sdk_add_event),
                          ("SDK start_span + end", sdk_span)):  # fmt: skip
            samples.setdefault(("reference", label), []).append(per_call_us(fn, calls // 4))
            cpu_samples.setdefault(("reference", label), []).append(last_cpu_us())
        run("plain", plain)
        run("recorded, span", traced)
        run("recorded, no span", traced)
        run("unsampled", traced)
        instrumentor.uninstrument()
        run("switched off", traced)
        instrumentor.instrument(tracer_provider=provider, snapshot_every=100)
    instrumentor.uninstrument()
    results = []
    for method_name in ("bump", "relabel", "peek"):
        base = statistics.median(samples[("plain", method_name)])
        base_min = min(samples[("plain", method_name)])
        base_cpu = statistics.median(cpu_samples[("plain", method_name)])
        for config in ("plain", "recorded, span", "recorded, no span", "unsampled", "switched off"):
            median = statistics.median(samples[(config, method_name)])
            fastest = min(samples[(config, method_name)])
            cpu = statistics.median(cpu_samples[(config, method_name)])
            results.append(
                (method_name, config, median, median - base, fastest - base_min, cpu - base_cpu)
            )
    for label in ("SDK add_event, 1 attribute", "SDK start_span + end"):
        median = statistics.median(samples[("reference", label)])
        cpu = statistics.median(cpu_samples[("reference", label)])
        results.append(("(ref)", label, median, median, min(samples[("reference", label)]), cpu))
    return results


# ---------------------------------------------------------------------------- the DB

GENERATOR_VERSION = 1
OBJECTS = 100
SNAPSHOT_EVERY = 100
CHANGE_EVERY_NS = 1_000_000


def db_file(n_spans: int) -> str:
    from procscope.exporters.tracedb import _schema

    return (
        f"/tmp/procscope-bench-state-s{_schema.SCHEMA_VERSION}-g{GENERATOR_VERSION}-n{n_spans}.db"
    )


def generate(path: str, n_spans: int) -> dict[str, Any]:
    """One span per method call, each with its change event (and a snapshot every 100
    changes of its object), attributes exactly as the instrumentor writes them."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from procscope.exporters.tracedb import _schema
    from procscope.exporters.tracedb._writer import Batch, Writer, encode_attributes

    rng = random.Random(0)
    writer = Writer(path, busy_timeout_s=30)
    rid = writer.resource_id(Resource.create({"service.name": "bench-state"}))
    scope = writer.scope_id(InstrumentationScope("procscope.instrumentation.state", "0.1.0"))
    names = [f"account-{k}" for k in range(OBJECTS)] + ["hot-account"]
    seq = [0] * len(names)
    epoch = [0] * len(names)
    since = [0] * len(names)
    balance = [0] * len(names)
    t0 = 1_750_000_000 * 10**9
    batch = Batch()
    counts = {"spans": 0, "events": 0}

    def add_event(span_index: int, name: str, at: int, attributes: dict[str, Any]) -> None:
        index = len(batch.events)
        batch.events.append((index, span_index, name, at, encode_attributes(attributes)))
        for key in _schema.INDEXED_EVENT_ATTRIBUTES:
            if key in attributes:
                batch.event_attrs.append((key, attributes[key], index))
        counts["events"] += 1

    def snapshot(k: int, span_index: int, at: int, reason: str) -> None:
        seq[k] += 1
        epoch[k] += 1
        since[k] = 0
        add_event(span_index, "procscope.state.snapshot", at, {
            "procscope.state.object": names[k], "procscope.state.class": "Account",
            "procscope.state.epoch": f"{names[k]}/{epoch[k]}", "procscope.state.seq": seq[k],
            "procscope.state.snapshot.reason": reason,
            "procscope.state.fields": ["owner", "balance"],
            "procscope.state.values": [repr(names[k]), repr(balance[k])],
        })  # fmt: skip

    for i in range(n_spans):
        k = len(names) - 1 if rng.random() < 0.1 else rng.randrange(OBJECTS)
        start = t0 + i * CHANGE_EVERY_NS
        index = len(batch.spans)
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        batch.spans.append((index, trace_id, rng.getrandbits(63) or 1, None, "Account.deposit",
                            0, start, start + 20_000, 0, None,
                            encode_attributes({"procscope.state.object": names[k]}),
                            rid, scope, 4242, "MainProcess"))  # fmt: skip
        batch.span_attrs.append(("procscope.state.object", names[k], index))
        counts["spans"] += 1
        if epoch[k] == 0:
            snapshot(k, index, start, "start")
        old = balance[k]
        balance[k] += rng.randrange(1, 100)
        seq[k] += 1
        add_event(index, "procscope.state.change", start + 10_000, {
            "procscope.state.object": names[k], "procscope.state.class": "Account",
            "procscope.state.method": "deposit", "procscope.state.epoch": f"{names[k]}/{epoch[k]}",
            "procscope.state.seq": seq[k], "procscope.state.fields": ["balance"],
            "procscope.state.field_seqs": [seq[k]], "procscope.state.old_values": [repr(old)],
            "procscope.state.values": [repr(balance[k])],
        })  # fmt: skip
        since[k] += 1
        if since[k] >= SNAPSHOT_EVERY:
            snapshot(k, index, start + 11_000, "periodic")
        if len(batch.spans) >= 20_000:
            writer.write(batch)
            batch = Batch()
    if batch.spans:
        writer.write(batch)
    writer.close()
    return {"t0": t0, "t_end": t0 + n_spans * CHANGE_EVERY_NS, "names": names, **counts}


def cached_db(n_spans: int) -> tuple[str, dict[str, Any]]:
    path = db_file(n_spans)
    if os.path.exists(path) and os.path.exists(path + ".json"):
        with open(path + ".json") as handle:
            return path, json.load(handle)
    for suffix in ("", "-wal", "-shm", ".json"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    print(f"generating {n_spans:,} spans into {path} (once; cached)...", flush=True)
    started = time.perf_counter()
    info = generate(path + ".tmp", n_spans)
    os.replace(path + ".tmp", path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + ".tmp" + suffix):
            os.remove(path + ".tmp" + suffix)
    with open(path + ".json", "w") as handle:
        json.dump(info, handle)
    print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return path, info


def bench_queries(n_spans: int, repeat: int) -> list[tuple[str, float, float, str]]:
    from procscope.exporters.tracedb import TraceDB

    path, info = cached_db(n_spans)
    rng = random.Random(1)
    results = []
    with TraceDB(path) as db:
        for name in ("account-7", "hot-account"):
            times = []
            last = None
            for _ in range(repeat):
                at = rng.randrange(info["t0"], info["t_end"])
                started = time.perf_counter()
                last = db.state_at(name, at)
                times.append((time.perf_counter() - started) * 1e3)
            assert last is not None and last.complete
            note = f"{last.changes_applied} changes after its snapshot"
            results.append((f"state_at {name}", statistics.median(times), max(times), note))
        started = time.perf_counter()
        history = db.state_history("account-7")
        took = (time.perf_counter() - started) * 1e3
        results.append(("state_history account-7", took, took, f"{len(history):,} records"))
        results.append(("(DB)", 0.0, 0.0, f"{info['spans']:,} spans, {info['events']:,} events"))
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a smaller DB")
    parser.add_argument("--spans", type=int, default=None, help="spans in the query DB")
    parser.add_argument("--calls-only", action="store_true", help="part 1 only (no trace DB)")
    args = parser.parse_args(argv)
    rounds, calls = (5, 2_000) if args.quick else (15, 10_000)
    n_spans = args.spans or (100_000 if args.quick else 1_000_000)

    print(f"1. cost per call (median of {rounds} interleaved rounds of {calls:,} calls)")
    print("   added = traced - plain: wall-clock medians, between the fastest rounds, and")
    print("   thread CPU-time medians (what other processes on the machine do not inflate)")
    print(
        f"   {'method':<7} {'configuration':<26} {'per call':>10} {'added':>10} {'(fastest)':>10}"
        f" {'added CPU':>10}"
    )
    for method_name, config, median, added, added_min, added_cpu in bench_calls(rounds, calls):
        goal = ""
        if config != "plain" and method_name != "(ref)":
            if method_name in ("bump", "relabel") and config.startswith("recorded"):
                goal = "goal <= 3 us"
            elif config != "switched off":
                goal = "goal <= 0.5 us"
        print(
            f"   {method_name:<7} {config:<26} {median:>8.2f} us {added:>+8.2f} us "
            f"{added_min:>+8.2f} us {added_cpu:>+8.2f} us  {goal}"
        )
    print(f"   load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    if args.calls_only:
        return 0
    print(f"\n2. queries on a {n_spans:,}-span trace DB (ms; goal: state_at <= 50 ms)")
    print(f"   {'query':<28} {'median':>8} {'max':>8}  note")
    for label, median, worst, note in bench_queries(n_spans, 5 if args.quick else 20):
        if label == "(DB)":
            print(f"   {note}")
        else:
            print(f"   {label:<28} {median:>8.2f} {worst:>8.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
