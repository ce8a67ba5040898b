"""OTLP export to real receivers (gRPC and http/protobuf) on 127.0.0.1, under procscope run."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

PROCSCOPE = str(Path(sys.executable).parent / "procscope")

PROGRAM = """
import threading
from opentelemetry import trace

tracer = trace.get_tracer("otlp-test")
with tracer.start_as_current_span("request") as request:
    with tracer.start_as_current_span("step-1"):
        pass
    with tracer.start_as_current_span("step-2"):
        pass
print("done", flush=True)
"""


class Received:
    """The spans a receiver decoded, flattened with their resource attributes."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def spans(self) -> list[tuple[Any, dict[str, Any]]]:
        out = []
        with self.lock:
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    resource = {
                        kv.key: _value(kv.value) for kv in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        out.extend((span, resource) for span in scope_spans.spans)
        return out


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    """A real OTLP/gRPC TraceService on a free port of 127.0.0.1."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    """A real OTLP http/protobuf receiver (POST /v1/traces) on a free port of 127.0.0.1."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            received.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    env.update(extra)
    return env


def _run(
    tmp_path: Path, env: dict[str, str], *, launcher: list[str]
) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(PROGRAM))
    return subprocess.run(
        [*launcher, str(app)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_program_spans(received: Received, service_name: str) -> None:
    spans = {span.name: (span, resource) for span, resource in received.spans()}
    assert set(spans) >= {"request", "step-1", "step-2"}, sorted(spans)
    request, resource = spans["request"]
    assert request.parent_span_id == b""
    for child in ("step-1", "step-2"):
        span, _ = spans[child]
        assert span.trace_id == request.trace_id and len(span.trace_id) == 16
        assert span.parent_span_id == request.span_id
    assert resource["service.name"] == service_name
    assert resource["process.pid"] > 0
    assert resource["telemetry.sdk.language"] == "python"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_procscope_run_exports_over_otlp(
    tmp_path: Path,
    grpc_receiver: tuple[str, Received],
    http_receiver: tuple[str, Received],
    protocol: str,
) -> None:
    """procscope run --exporter otlp delivers the program's spans, decoded intact."""
    endpoint, received = grpc_receiver if protocol == "grpc" else http_receiver
    if protocol == "http/protobuf":
        env = _environ(
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint + "/v1/traces",
            OTEL_SERVICE_NAME="otlp-http-test",
        )
    else:
        env = _environ(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="otlp-grpc-test")
    result = _run(tmp_path, env, launcher=[PROCSCOPE, "run", "--exporter", "otlp", "--", "python"])
    assert result.returncode == 0, result.stderr
    assert "cannot export" not in result.stderr
    _assert_program_spans(
        received, "otlp-http-test" if protocol == "http/protobuf" else "otlp-grpc-test"
    )


def test_programmatic_setup_exports_to_both_tracedb_and_otlp(
    tmp_path: Path, grpc_receiver: tuple[str, Received]
) -> None:
    """setup(exporter="tracedb,otlp") sends the same spans to the trace DB and OTLP."""
    endpoint, received = grpc_receiver
    app = tmp_path / "setup_app.py"
    db = tmp_path / "both.db"
    app.write_text(
        "import procscope\n"
        f"procscope.setup(exporter='tracedb,otlp', db={str(db)!r})\n" + textwrap.dedent(PROGRAM)
    )
    result = subprocess.run(
        [sys.executable, str(app)],
        cwd=tmp_path,
        env=_environ(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _assert_program_spans(received, "setup_app")
    from procscope.exporters.tracedb import TraceDB

    names = {span.name for span in TraceDB(str(db)).spans()}
    assert names >= {"request", "step-1", "step-2"}


def test_auto_launch_exports_over_otlp(tmp_path: Path, grpc_receiver: tuple[str, Received]) -> None:
    """opentelemetry-instrument with OTEL_TRACES_EXPORTER=otlp uses procscope's pipeline."""
    endpoint, received = grpc_receiver
    env = _environ(
        OTEL_PYTHON_DISTRO="procscope",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
    )
    launcher = [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable]
    result = _run(tmp_path, env, launcher=launcher)
    assert result.returncode == 0, result.stderr
    _assert_program_spans(received, "app")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_unreachable_endpoint_warns_once_and_does_not_hold_the_program(
    tmp_path: Path, protocol: str
) -> None:
    """With nothing listening, the program finishes, warns once, and exits within the
    exporter's timeout (plus interpreter start-up)."""
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _environ(
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    program = textwrap.dedent(PROGRAM) + textwrap.dedent(
        """
        for i in range(3000):  # more than one batch, so several exports are pending at exit
            with tracer.start_as_current_span(f"more-{i}"):
                pass
        """
    )
    (tmp_path / "app.py").write_text(program)
    started = time.monotonic()
    result = subprocess.run(
        [PROCSCOPE, "run", "--exporter", "otlp", "--", "python", str(tmp_path / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert result.stderr.count("cannot export spans over OTLP") == 1, result.stderr
    assert "Transient error" not in result.stderr
    # Bounded, not timed: 2 s of exporter timeout, the rest is start-up on a busy machine.
    assert elapsed < 2 + 25, elapsed
