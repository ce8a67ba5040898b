"""What a child's exit flush cannot export in its budget is handed to a survivor (issue 14,
finding 3): with OTLP alone, a fork and a spawn child record spans while the receiver
stalls; their exits write what is left to the hand-off spool; the receiver recovers and
the parent, at its shutdown, exports the children's spans through its own exporter.

The receiver is a real OTLP http/protobuf server run by the test. While stalled it holds
each request without answering, then answers 400 without keeping it: the sender timed
out, so nothing it sent then counts as received.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

HANG_SECONDS = 120

PROGRAM = textwrap.dedent(
    """
    import json, logging, multiprocessing as mp, os, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    import procscope
    from opentelemetry import trace

    def work(out_path):
        tracer = trace.get_tracer("handoff-test")
        ids = ["%016x" % trace.get_current_span().get_span_context().span_id]
        for i in range(40):
            with tracer.start_as_current_span(f"child-work-{i}") as span:
                span.set_attribute("i", i)
                ids.append("%016x" % span.get_span_context().span_id)
        with open(out_path, "w") as out:
            json.dump(ids, out)

    if __name__ == "__main__":
        procscope.setup(exporter="otlp")
        out_dir = sys.argv[1]
        exits = {}
        for method in ("fork", "spawn"):
            child = mp.get_context(method).Process(
                target=work, args=(os.path.join(out_dir, method + ".json"),)
            )
            child.start()
            while not os.path.exists(os.path.join(out_dir, method + ".json")):
                time.sleep(0.01)
            started = time.perf_counter()
            child.join()
            exits[method] = [time.perf_counter() - started, child.exitcode]
        print(json.dumps(exits), flush=True)
        sys.stdin.readline()  # the test lets the receiver recover
        if sys.argv[2] == "worker":  # wait for the batch worker to empty the spool
            spool = os.environ["PROCSCOPE_HANDOFF_DIR"]
            for _ in range(600):
                if not os.listdir(spool):
                    print("spool emptied before shutdown", flush=True)
                    break
                time.sleep(0.1)
        procscope.shutdown()
        print("done", flush=True)
    """
)


class StallingReceiver:
    """An OTLP http/protobuf receiver that can stall (see the module's docstring)."""

    def __init__(self) -> None:
        self.span_ids: list[str] = []
        self.stalled = threading.Event()
        self.recovered = threading.Event()
        self._lock = threading.Lock()

    def receive(self, body: bytes) -> bool:
        if self.stalled.is_set():
            self.recovered.wait(HANG_SECONDS)
            return False
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.span_ids.extend(span.span_id.hex() for span in scope_spans.spans)
        return True


@pytest.fixture
def receiver() -> Iterator[tuple[str, StallingReceiver]]:
    state = StallingReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            kept = state.receive(body)
            payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if kept else 400)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.recovered.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("survivor", ["shutdown", "worker"])
def test_children_cut_short_by_a_stalled_receiver_hand_their_spans_to_the_parent(
    tmp_path: Path, receiver: tuple[str, StallingReceiver], survivor: str
) -> None:
    """A fork and a spawn child exit while the OTLP receiver stalls (within the budget);
    once it recovers, the parent exports every span of both children, each once: at its
    shutdown, or before it on its batch worker's schedule (before: all were dropped at
    the children's exits)."""
    endpoint, state = receiver
    state.stalled.set()
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    spool_parent = tmp_path / "tmp"
    spool_parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        TMPDIR=str(spool_parent),
    )
    proc = subprocess.Popen(
        [sys.executable, str(program), str(tmp_path), survivor],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=str(tmp_path),
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        exits = json.loads(proc.stdout.readline() or "null")
        state.recovered.set()
        state.stalled.clear()
        out, err = proc.communicate("go\n", timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"hung (killed after {HANG_SECONDS} s)") from None
    assert proc.returncode == 0 and out.splitlines()[-1] == "done", err
    if survivor == "worker":
        # A spool file is deleted only once exported: the worker exported them all.
        assert "spool emptied before shutdown" in out, out
    assert exits is not None, err
    for method, (seconds, code) in exits.items():
        assert code == 0, (method, err)
        # The exit budget is 0.5 s; a child waiting on the receiver took 5-10 s.
        assert seconds < 5.0, (method, seconds, err)
    assert "handed off" in err, err
    child_ids = []
    for method in ("fork", "spawn"):
        child_ids.extend(json.loads((tmp_path / f"{method}.json").read_text()))
    received = state.span_ids
    missing = sorted(set(child_ids) - set(received))
    assert not missing, (len(missing), len(child_ids), err)
    twice = sorted(i for i in set(child_ids) if received.count(i) > 1)
    assert not twice, twice
    # Exported files are gone from the spool.
    leftovers = [p.name for p in spool_parent.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


# --- the spool itself: fidelity, corrupt files, racing survivors ---------------------------

RACER = textwrap.dedent(
    """
    import sys
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from procscope.core import handoff

    class IdsToFile(SpanExporter):
        def export(self, spans):
            with open(sys.argv[1], "a") as out:
                out.writelines("%016x\\n" % s.context.span_id for s in spans)
            return SpanExportResult.SUCCESS

    sys.stdin.readline()  # both start together
    handoff.collect(IdsToFile())
    """
)


def _recorded_spans(count: int) -> list[Any]:
    """Finished SDK spans with every field OTLP carries: parents, links, events, status,
    kinds, attributes of each type, a resource and a scope."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "spooled", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("spool-test", "1.2", schema_url="https://example.org/s")
    for i in range(count):
        with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
            with tracer.start_as_current_span(
                f"child-{i}",
                kind=SpanKind.PRODUCER,
                links=[Link(root.get_span_context(), {"why": "test"})],
                attributes={"s": "x", "b": True, "f": 1.5, "n": i, "seq": ("a", "b")},
            ) as child:
                child.add_event("happened", {"k": 7}, timestamp=1_000 + i)
                child.set_status(Status(StatusCode.ERROR, "failed on purpose"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_spooled_spans_come_back_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans written to the spool and collected encode to the same OTLP request as the
    originals: ids, parents, times, attributes, events, links, status, resource, scope."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from procscope.core import handoff

    monkeypatch.setenv(handoff.ENV_DIR, str(tmp_path / "spool"))
    spans = _recorded_spans(300)  # more than one encoded chunk
    target = InMemorySpanExporter()
    written = handoff.write(spans, handoff.exporter_key(target), deadline=float("inf"))
    assert written == len(spans)
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert handoff.collect(target) == len(spans)
    assert encode_spans(list(target.get_finished_spans())) == encode_spans(spans)
    assert os.listdir(tmp_path / "spool") == []


def test_a_corrupt_spool_file_is_counted_and_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An undecodable spool file is moved to corrupt/ and counted; the good file beside
    it is still exported, and nothing raises."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from procscope.core import handoff

    spool = tmp_path / "spool"
    monkeypatch.setenv(handoff.ENV_DIR, str(spool))
    target = InMemorySpanExporter()
    key = handoff.exporter_key(target)
    spans = _recorded_spans(2)
    assert handoff.write(spans, key, deadline=float("inf")) == len(spans)
    (spool / f"{key}.999.1.spans").write_bytes(b"\x00\x00\x00\x10not a protobuf at all")
    corrupt_before = handoff.counts()["corrupt"]
    assert handoff.collect(target) == len(spans)
    assert handoff.counts()["corrupt"] == corrupt_before + 1
    assert os.listdir(spool / "corrupt") == [f"{key}.999.1.spans"]
    assert sorted(os.listdir(spool)) == ["corrupt"]


def test_two_survivors_racing_for_the_spool_export_each_file_once(tmp_path: Path) -> None:
    """Two processes collect from one spool of 200 files at the same moment: every span
    is exported by exactly one of them."""
    from procscope.core import handoff

    spool = tmp_path / "spool"
    env = dict(os.environ, **{handoff.ENV_DIR: str(spool)})
    os.environ[handoff.ENV_DIR] = str(spool)
    try:
        spans = _recorded_spans(100)  # 200 spans, one file each
        key = "__main__.IdsToFile"  # handoff.exporter_key of the racers' exporter
        for span in spans:
            assert handoff.write([span], key, deadline=float("inf")) == 1
    finally:
        del os.environ[handoff.ENV_DIR]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / f"ids-{n}")],
            stdin=subprocess.PIPE,
            env=env,
            text=True,
        )
        for n in range(2)
    ]
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    for racer in racers:
        racer.communicate(timeout=HANG_SECONDS)
        assert racer.returncode == 0
    exported = []
    for n in range(2):
        path = tmp_path / f"ids-{n}"
        exported.extend(path.read_text().split() if path.exists() else [])
    assert sorted(exported) == sorted(f"{s.context.span_id:016x}" for s in spans)
    assert os.listdir(spool) == []


SHUTS_DOWN = textwrap.dedent(
    """
    import procscope
    procscope.setup(exporter="console")
    procscope.shutdown()
    """
)


@pytest.mark.parametrize("top_alive", [True, False])
def test_another_process_exports_the_spool_at_shutdown_only_once_the_top_one_is_gone(
    tmp_path: Path, top_alive: bool
) -> None:
    """A process of the program other than the top one leaves the spool to the top
    process while it lives (its exit does not wait on the backend for it), and exports
    it at its shutdown once the top process is gone."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    from procscope.core import handoff

    spool = tmp_path / "spool"
    spans = _recorded_spans(1)
    os.environ[handoff.ENV_DIR] = str(spool)
    try:
        key = handoff.exporter_key(ConsoleSpanExporter())
        assert handoff.write(spans, key, deadline=float("inf")) == len(spans)
    finally:
        del os.environ[handoff.ENV_DIR]
    if top_alive:
        owner = os.getpid()
    else:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        owner = gone.pid
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env.update({handoff.ENV_DIR: str(spool), handoff.ENV_OWNER: str(owner)})
    done = subprocess.run(
        [sys.executable, "-c", SHUTS_DOWN],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=HANG_SECONDS,
    )
    assert done.returncode == 0, done.stderr
    exported = done.stdout.count('"name": "child-0"')
    assert (exported, len(os.listdir(spool))) == ((0, 1) if top_alive else (1, 0))
