"""``procscope export``: a recorded run as a Perfetto trace and as OTLP JSON, checked
against the trace DB by parsing the files with Perfetto's and OpenTelemetry's protos.

One real run is recorded for the module: a fork worker and a spawn worker squaring
numbers from a queue, a traced object, a process that crashes, a thread and asyncio
tasks exchanging messages through an asyncio queue, two of them waiting at once.

Perfetto's own trace processor cannot run here (the ``perfetto`` package downloads its
binary at first use, and this machine reaches no such host), so the tests replay the
trace as it does: packets sorted by timestamp (the file's order between equal ones),
slices nesting per track, each flow's start before its end, descriptors first.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from .conftest import clean_environ

PROCSCOPE = str(Path(sys.executable).parent / "procscope")

PROGRAM = """
import asyncio
import multiprocessing as mp
import threading

import procscope


class Tally:
    def __init__(self):
        self.done = 0
        self.total = 0.0
        self.last = None

    def add(self, value):
        self.done += 1
        self.total += value
        self.last = str(value)


def square(jobs, results):
    while (n := jobs.get()) is not None:
        results.put(n * n)


def crash():
    raise RuntimeError("boom")


async def produce(queue, n):
    await asyncio.sleep(0.01 * n)
    await queue.put(n)


async def consume(queue, count):
    return [await queue.get() for _ in range(count)]


async def pipeline():
    queue = asyncio.Queue()
    # Two consumers wait at once: their receive spans overlap on the loop's thread
    # without nesting.
    await asyncio.gather(produce(queue, 1), produce(queue, 2), consume(queue, 1), consume(queue, 1))


if __name__ == "__main__":
    tally = procscope.trace_state(Tally(), name="tally")
    fork, spawn = mp.get_context("fork"), mp.get_context("spawn")
    jobs, results = spawn.Queue(), spawn.Queue()
    workers = [
        fork.Process(target=square, args=(jobs, results), name="forked"),
        spawn.Process(target=square, args=(jobs, results), name="spawned"),
    ]
    for worker in workers:
        worker.start()
    for n in range(1, 5):
        jobs.put(n)
    for _ in workers:
        jobs.put(None)
    for _ in range(4):
        tally.add(results.get())
    for worker in workers:
        worker.join()
    crasher = spawn.Process(target=crash, name="crasher")
    crasher.start()
    crasher.join()
    helper = threading.Thread(target=tally.add, args=(1,), name="helper")
    helper.start()
    helper.join()
    asyncio.run(pipeline())
"""


def _procscope(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROCSCOPE, *args],
        cwd=cwd,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trace DB of one run of PROGRAM under ``procscope run``."""
    folder = tmp_path_factory.mktemp("export")
    (folder / "app.py").write_text(PROGRAM)
    db = folder / "app.db"
    result = _procscope("run", "--db", str(db), "--", sys.executable, "app.py", cwd=folder)
    assert result.returncode == 0, result.stderr
    return db


def _db_spans(db: Path) -> list[Any]:
    from procscope.exporters.tracedb import TraceDB

    with TraceDB(str(db)) as trace_db:
        return trace_db.spans()


# ---------------------------------------------------------------------------- Perfetto


def _perfetto(path: Path) -> Any:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2

    trace = perfetto_trace_pb2.Trace()
    trace.ParseFromString(path.read_bytes())
    return trace


def _replay(trace: Any) -> dict[str, Any]:
    """Read the trace as Perfetto's trace processor does, checking what it requires;
    returns the slices (name, track, begin, end, flow ids, terminating flow ids)."""
    described: set[int] = set()
    events = []
    for index, packet in enumerate(trace.packet):
        if packet.HasField("track_descriptor"):
            described.add(packet.track_descriptor.uuid)
        elif packet.HasField("track_event"):
            event = packet.track_event
            assert event.track_uuid in described, "an event before its track's descriptor"
            events.append((packet.timestamp, index, event))
    events.sort(key=lambda item: (item[0], item[1]))
    open_slices: dict[int, list[dict[str, Any]]] = defaultdict(list)
    slices, instants, counters = [], [], []
    flows_started: dict[int, int] = {}
    flows_ended: dict[int, int] = {}
    for timestamp, _index, event in events:
        kind = event.type
        if kind == 1:  # SLICE_BEGIN
            slice_ = {"name": event.name, "track": event.track_uuid, "begin": timestamp}
            slice_["annotations"] = {a.name: a for a in event.debug_annotations}
            open_slices[event.track_uuid].append(slice_)
            slices.append(slice_)
        elif kind == 2:  # SLICE_END: closes the innermost open slice of its track
            assert open_slices[event.track_uuid], "an end without a begin on its track"
            open_slices[event.track_uuid].pop()["end"] = timestamp
        elif kind == 3:
            instants.append((event.name, event.track_uuid, timestamp))
        elif kind == 4:
            counters.append((event.track_uuid, timestamp, event.double_counter_value))
        for flow in event.flow_ids:
            flows_started[flow] = timestamp
        for flow in event.terminating_flow_ids:
            assert flow in flows_started, "a flow ends before it starts: Perfetto drops it"
            assert flows_started[flow] <= timestamp
            flows_ended[flow] = timestamp
    assert not any(open_slices.values()), "slices left open"
    return {
        "slices": slices,
        "instants": instants,
        "counters": counters,
        "flows_started": flows_started,
        "flows_ended": flows_ended,
    }


def _descriptors(trace: Any) -> list[Any]:
    return [p.track_descriptor for p in trace.packet if p.HasField("track_descriptor")]


def test_perfetto_export_has_a_track_per_process_thread_and_task_and_a_slice_per_span(
    recorded: Path,
) -> None:
    """Every process, thread and asyncio task of the run has its track, every span its
    slice (nesting per track, as Perfetto requires), with its attributes attached."""
    out = recorded.parent / "run.pftrace"
    result = _procscope(
        "export", "--db", str(recorded), "--format", "perfetto", "-o", str(out), cwd=recorded.parent
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    spans = _db_spans(recorded)
    trace = _perfetto(out)
    replay = _replay(trace)

    processes = {
        d.process.pid: d.process.process_name for d in _descriptors(trace) if d.HasField("process")
    }
    # Each process by its one name, as `procscope processes` shows it.
    from procscope.exporters.tracedb import TraceDB

    with TraceDB(str(recorded)) as db:
        names = {r.pid: r.name for r in db.processes()}
    assert processes == {s.pid: names.get(s.pid) or s.process_name for s in spans}
    assert {"app", "forked", "spawned", "crasher"} <= set(processes.values())

    threads = {
        (d.thread.pid, d.thread.tid, d.thread.thread_name)
        for d in _descriptors(trace)
        if d.HasField("thread")
    }
    expected_threads = {
        (s.pid, s.attributes["thread.id"], s.attributes["thread.name"])
        for s in spans
        if "thread.id" in s.attributes and s.attributes.get("procscope.lifecycle.kind") != "task"
    }
    assert threads == expected_threads
    assert any(name == "helper" for _pid, _tid, name in threads)

    task_names = {
        s.attributes["procscope.task.name"]
        for s in spans
        if s.attributes.get("procscope.lifecycle.kind") == "task"
    }
    assert len(task_names) >= 4  # the pipeline and its four tasks
    named = {d.name for d in _descriptors(trace) if d.name and not d.HasField("counter")}
    assert task_names <= named

    # The two receives waiting at once overlap without nesting: a lane of their own.
    assert "MainThread (overlap 1)" in named
    assert sorted(s["name"] for s in replay["slices"]) == sorted(s.name for s in spans)
    by_id = {s["annotations"]["span_id"].string_value: s for s in replay["slices"]}
    assert set(by_id) == {s.span_id for s in spans}
    for span in spans:
        slice_ = by_id[span.span_id]
        assert (slice_["begin"], slice_["end"]) == (span.start_ns, span.end_ns)
        for key, value in span.attributes.items():
            annotation = slice_["annotations"][key]
            shown = annotation.WhichOneof("value")
            assert getattr(annotation, shown) == (
                value if not isinstance(value, list) else json.dumps(value)
            )


def test_perfetto_export_draws_messages_as_flows_and_state_as_counters(recorded: Path) -> None:
    """Each message is a flow from its send slice to its receive, each numeric field of
    the traced object a counter holding its recorded values, and the crash and every
    process's exit are instants."""
    out = recorded.parent / "flows.pftrace"
    args = ["export", "--db", str(recorded), "--format", "perfetto", "-o", str(out), "--json"]
    result = _procscope(*args, cwd=recorded.parent)
    assert result.returncode == 0, result.stderr
    spans = _db_spans(recorded)
    trace = _perfetto(out)
    replay = _replay(trace)
    # --json says what was written.
    said = json.loads(result.stdout)
    assert (said["format"], said["file"], said["slices"]) == ("perfetto", str(out), len(spans))
    assert (said["flows"], said["counters"]) == (
        len(replay["flows_started"]),
        len(replay["counters"]),
    )

    sent = {int(s.attributes["messaging.message.id"], 16) for s in spans if s.kind == "PRODUCER"}
    received = {
        int(s.attributes["messaging.message.id"], 16) for s in spans if s.kind == "CONSUMER"
    }
    assert len(sent) >= 10 and received <= sent
    assert set(replay["flows_started"]) == sent
    assert set(replay["flows_ended"]) == received
    # The same messages as `procscope messages` lists: an arrow for each.
    from procscope.exporters.tracedb import TraceDB

    with TraceDB(str(recorded)) as db:
        messages = db.messages()
    assert {int(m.message_id, 16) for m in messages} == sent
    assert {int(m.message_id, 16) for m in messages if m.receiver is not None} == received

    # Counters: one value per numeric field of each snapshot and change, in order.
    tracks = {d.uuid: d.name for d in _descriptors(trace) if d.HasField("counter")}
    assert set(tracks.values()) == {"tally.done", "tally.total"}  # `last` holds text
    expected: dict[str, list[float]] = defaultdict(list)
    for span in spans:
        for event in span.events:
            if not event.name.startswith("procscope.state."):
                continue
            fields = event.attributes["procscope.state.fields"]
            values = event.attributes["procscope.state.values"]
            for field, value in zip(fields, values):
                if field in ("done", "total"):
                    expected[f"tally.{field}"].append((event.time_ns, float(value)))
    got: dict[str, list[float]] = defaultdict(list)
    for uuid, timestamp, value in replay["counters"]:
        got[tracks[uuid]].append((timestamp, value))
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    assert sorted(got["tally.done"])[-1][1] == 5.0  # four squares and the helper's 1
    assert sorted(got["tally.total"])[-1][1] == 31.0  # 1 + 4 + 9 + 16 + 1

    names = Counter(name for name, _track, _ts in replay["instants"])
    exceptions = sum(1 for s in spans for e in s.events if e.name == "exception")
    assert names["exception RuntimeError"] == exceptions >= 1
    assert names["exit code 1"] == 1 and names["reaped: exit code 1"] == 1  # the crasher
    processes = {
        d.uuid: d.process.process_name for d in _descriptors(trace) if d.HasField("process")
    }
    crash_tracks = {
        processes.get(track)
        for name, track, _ts in replay["instants"]
        if name.endswith("exit code 1")
    }
    assert crash_tracks == {"crasher"}


def test_slices_nest_per_lane_when_spans_start_together_or_overlap(tmp_path: Path) -> None:
    """Spans of one thread that start at the same instant are placed longest first (the
    parent encloses its child whatever their order in the DB); a span that overlaps
    another without nesting goes on an overlap lane; each slice keeps its times."""
    from procscope._export._perfetto import write_perfetto
    from procscope.exporters.tracedb import SpanRecord

    def span(span_id: str, start: int, end: int) -> SpanRecord:
        attributes = {"thread.id": 7, "thread.name": "worker"}
        return SpanRecord(
            "ab" * 16,
            span_id,
            None,
            span_id,
            "INTERNAL",
            start,
            end,
            "UNSET",
            None,
            attributes,
            pid=7,
            process_name="p",
        )

    spans = [  # in start order, as the DB gives them; a child before its parent
        span("child", 100, 150),
        span("parent", 100, 300),
        span("overlapping", 200, 400),
        span("instant", 400, 400),
        span("after", 400, 500),
    ]
    out = tmp_path / "lanes.pftrace"
    with out.open("wb") as handle:
        counts = write_perfetto(spans, handle)
    trace = _perfetto(out)
    replay = _replay(trace)
    assert counts["slices"] == 5
    got = {s["annotations"]["span_id"].string_value: s for s in replay["slices"]}
    assert {k: (v["begin"], v["end"]) for k, v in got.items()} == {
        s.span_id: (s.start_ns, s.end_ns) for s in spans
    }
    lanes = {d.uuid: d.name or d.thread.thread_name for d in _descriptors(trace)}
    assert lanes[got["child"]["track"]] == lanes[got["parent"]["track"]] == "worker"
    assert lanes[got["overlapping"]["track"]] == "worker (overlap 1)"


# ---------------------------------------------------------------------------- OTLP JSON


def _hex_ids_as_base64(node: Any) -> Any:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping (json_format) reads bytes as
    base64: convert, as OpenTelemetry's own OTLP/JSON readers do."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else _hex_ids_as_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_as_base64(item) for item in node]
    return node


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind)


def _attrs(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _check_otlp_json(text: str, recorded: Path) -> None:
    """Each line of ``text`` parses into an ExportTraceServiceRequest (opentelemetry-proto)
    and together they hold every span of the DB, once: ids, parent, name, kind, times,
    status, attributes, events, links, and the resource and scope it was recorded under."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from procscope.exporters.tracedb import TraceDB

    exported = {}
    for line in text.splitlines():
        request = json_format.Parse(
            json.dumps(_hex_ids_as_base64(json.loads(line))), ExportTraceServiceRequest()
        )
        for resource_spans in request.resource_spans:
            resource = _attrs(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    assert span.span_id.hex() not in exported
                    exported[span.span_id.hex()] = (resource, scope_spans.scope, span)

    with TraceDB(str(recorded)) as db:
        spans = db.spans()
        assert set(exported) == {s.span_id for s in spans}
        kinds = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
        for record in spans:
            resource, scope, span = exported[record.span_id]
            assert span.trace_id.hex() == record.trace_id
            assert (span.parent_span_id.hex() or None) == record.parent_span_id
            assert (span.name, span.kind) == (record.name, kinds[record.kind])
            assert (span.start_time_unix_nano, span.end_time_unix_nano) == (
                record.start_ns,
                record.end_ns,
            )
            assert span.status.code == {"UNSET": 0, "OK": 1, "ERROR": 2}[record.status_code]
            assert _attrs(span.attributes) == record.attributes
            assert [(e.name, e.time_unix_nano, _attrs(e.attributes)) for e in span.events] == [
                (e.name, e.time_ns, e.attributes) for e in record.events
            ]
            assert [(link.trace_id.hex(), link.span_id.hex()) for link in span.links] == [
                (link.trace_id, link.span_id) for link in record.links
            ]
            assert resource == db.resource(record.resource_id)
            assert (scope.name, scope.version or None) == (
                record.scope_name,
                record.scope_version or None,
            )
    assert any(s.status.code == 2 for _r, _s, s in exported.values())  # the crash
    assert any(len(s.links) for _r, _s, s in exported.values())  # receive -> send


def test_otlp_json_export_holds_every_span_with_its_resource_scope_events_and_links(
    recorded: Path,
) -> None:
    """A small run's OTLP JSON is one line, a JSON document (Jaeger's upload) that is also
    JSON lines (the Collector's file format, otel-tui), holding every span of the DB with
    its resource, scope, events and links."""
    out = recorded.parent / "run.json"
    result = _procscope(
        "export",
        "--db",
        str(recorded),
        "--format",
        "otlp-json",
        "-o",
        str(out),
        cwd=recorded.parent,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count("\n") == 1 and text.endswith("\n")
    _check_otlp_json(text, recorded)


def test_otlp_json_export_of_a_large_run_is_split_into_lines(
    recorded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a line's budget (256 KiB of spans: the Collector's file receiver reads lines
    of up to 1 MiB) or the writer's memory budget, spans go out in lines of their own; the
    lines together still hold every span once. Budgets made small to split this run."""
    from procscope._export import _otlp_json, export
    from procscope.exporters.tracedb import TraceDB

    monkeypatch.setattr(_otlp_json, "LINE_BYTES", 3000)
    monkeypatch.setattr(_otlp_json, "BUFFERED_BYTES", 5000)
    out = recorded.parent / "split.json"
    with TraceDB(str(recorded)) as db:
        counts = export(db, "otlp-json", str(out))
    text = out.read_text()
    assert counts["spans"] == len(_db_spans(recorded))
    assert text.count("\n") > 5
    _check_otlp_json(text, recorded)


# ---------------------------------------------------------------------------- runs

SMALL_PROGRAM = """
import queue

jobs = queue.Queue()
jobs.put(1)
jobs.get()
"""


def _run_ids_in(path: Path) -> Counter[str]:
    """How many exported spans each run id (from their resources) has."""
    found: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            attributes = {
                a["key"]: a["value"].get("stringValue")
                for a in resource_spans["resource"]["attributes"]
            }
            for scope_spans in resource_spans["scopeSpans"]:
                found[attributes["procscope.run.id"]] += len(scope_spans["spans"])
    return found


def test_export_writes_the_latest_run_or_the_one_named(tmp_path: Path) -> None:
    """Like every read command, export reads the latest run by default, the run --run
    names, or every run with --run all; an unknown run exits 2 with one line."""
    from procscope.exporters.tracedb import TraceDB

    (tmp_path / "app.py").write_text(SMALL_PROGRAM)
    db = tmp_path / "two.db"
    for _ in range(2):
        done = _procscope("run", "--db", str(db), "--", sys.executable, "app.py", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    with TraceDB(str(db)) as trace_db:
        runs = trace_db.runs()
        per_run = {r.run_id: trace_db.span_count(run=r.run_id) for r in runs}
    assert len(runs) == 2
    first, latest = runs[0].run_id, runs[-1].run_id
    out = tmp_path / "out.json"
    for extra, expected in (
        ([], {latest: per_run[latest]}),
        (["--run", first[:8]], {first: per_run[first]}),
        (["--run", "all"], per_run),
    ):
        args = ["export", "--db", str(db), "--format", "otlp-json", "-o", str(out), *extra]
        done = _procscope(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert _run_ids_in(out) == expected
    done = _procscope(
        "export",
        "--db",
        str(db),
        "--format",
        "perfetto",
        "-o",
        str(out),
        "--run",
        "ffffffffffff",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "no run 'ffffffffffff'" in done.stderr


# ---------------------------------------------------------------------------- bad usage


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--format", "chrome", "-o", "{dir}/x"], "invalid choice: 'chrome'"),
        (["--format", "perfetto", "-o", "{dir}/missing/x"], "no such directory"),
        (["--format", "otlp-json", "-o", "{dir}"], "it is a directory"),
        (["--format", "perfetto", "-o", "{dir}/app.db"], "it is the trace DB's own file"),
        (["--format", "perfetto", "-o", "{dir}/x", "--db", "{dir}/none.db"], "no such file"),
        (["--format", "perfetto", "-o", "{dir}/x", "--db", "{dir}/app.py"], "not a SQLite file"),
    ],
)
def test_export_bad_arguments_exit_2_with_one_line(
    recorded: Path, args: list[str], reason: str
) -> None:
    """A bad format, a FILE that cannot be written (or the trace DB itself), a DB that
    cannot be read: exit 2, one line on stderr saying why, no file left behind, and the
    DB untouched."""
    folder = recorded.parent
    before = set(os.listdir(folder))
    db_bytes = recorded.read_bytes()
    words = [a.format(dir=folder) for a in args]
    if "--db" not in words:
        words += ["--db", str(recorded)]
    result = _procscope("export", *words, cwd=folder)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr
    assert set(os.listdir(folder)) == before
    assert recorded.read_bytes() == db_bytes
