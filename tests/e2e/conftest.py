"""A real OTLP backend for the end-to-end tests: Arize Phoenix, in its own virtual environment.

Phoenix (PyPI arize-phoenix) receives OTLP over HTTP and gRPC and stores the spans in
SQLite; its REST API gives them back. It is installed once into `.venv-phoenix` (beside the
project's `.venv`; PROCSCOPE_PHOENIX_VENV chooses another place) and reused afterwards,
because it has far more dependencies than procscope, which must not meet them.

Everything listens on 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[2]
PHOENIX_VENV = Path(os.environ.get("PROCSCOPE_PHOENIX_VENV") or ROOT / ".venv-phoenix")
# The version the REST API shape in test_phoenix.py was read from (its source,
# phoenix/server/api/routers/v1/spans.py: GET /v1/projects/{project}/spans).
PHOENIX_REQUIREMENT = "arize-phoenix==20.26.1"
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20

# Straight to 127.0.0.1, whatever HTTP_PROXY says.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# How long each phase took, reported at the end of the run (pytest_terminal_summary).
TIMINGS: dict[str, float] = {}
_RUN_STARTED = time.monotonic()

# Phoenix binds its gRPC receiver to every interface ("[::]:port") and has no setting to
# change that. The launcher rebinds it to 127.0.0.1 before Phoenix starts, then runs
# `phoenix serve` unchanged.
LAUNCHER = """
import sys
import grpc.aio._server as aio_server

_add_insecure_port = aio_server.Server.add_insecure_port

def _loopback_only(self, address):
    return _add_insecure_port(self, "127.0.0.1:" + address.rsplit(":", 1)[1])

aio_server.Server.add_insecure_port = _loopback_only

from phoenix.server.main import main
sys.argv = ["phoenix", "serve"]
sys.exit(main())
"""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    total = time.monotonic() - _RUN_STARTED
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in TIMINGS.items())
    terminalreporter.write_line(f"e2e: the whole run took {total:.1f} s ({parts})")


@pytest.fixture(scope="session")
def e2e_timings() -> dict[str, float]:
    """Where tests note how long their phases took; printed at the end of the run."""
    return TIMINGS


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _phoenix_installed(python: Path) -> bool:
    """Whether the venv has the pinned Phoenix (its metadata: importing it takes seconds)."""
    if not python.exists():
        return False
    wanted = PHOENIX_REQUIREMENT.split("==", 1)[1]
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip() == wanted


@pytest.fixture(scope="session")
def phoenix_python() -> Path:
    """The Python of Phoenix's own virtual environment, created and filled if need be."""
    started = time.monotonic()
    python = _venv_python(PHOENIX_VENV)
    if not _phoenix_installed(python):
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(PHOENIX_VENV)], check=True, timeout=300
            )
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PHOENIX_REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        assert install.returncode == 0, f"installing {PHOENIX_REQUIREMENT} failed:\n" + "\n".join(
            line for line in install.stderr.splitlines() if "is ignored" not in line
        )
        assert _phoenix_installed(python), f"{PHOENIX_REQUIREMENT} installed but not found"
    TIMINGS["Phoenix venv ready"] = time.monotonic() - started
    return python


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it; closed again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the listening TCP sockets on ``port`` (Linux /proc)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


# 127.0.0.1 as /proc/net/tcp writes it, and ::1 and ::ffff:127.0.0.1 as tcp6 does.
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@dataclass
class Phoenix:
    """A running Phoenix: where to send OTLP and where to read spans back."""

    http_port: int
    grpc_port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of Phoenix's output, without its access log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if '" 200 OK' not in line]
        return "\n".join(kept[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Phoenix shuts down cleanly), then SIGKILL if it has not within the bound."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def phoenix(phoenix_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """`phoenix serve` on 127.0.0.1, free ports, a fresh working directory, telemetry off."""
    workdir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_port(), free_port()
    # A clean environment: none of the test's OTEL_* or PROCSCOPE_* settings, no PYTHONPATH
    # (procscope's auto-instrumentation must not load into the backend).
    env = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ
    }
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(http_port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir / "working-dir"),
        PHOENIX_TELEMETRY_ENABLED="false",  # no FullStory or Scarf.sh pixels
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",  # no requests to the internet of its own
        PHOENIX_AGENTS_DISABLE_BASH="true",  # nothing here needs its assistant's shell
    )
    log = workdir / "phoenix.log"
    started = time.monotonic()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(phoenix_python), "-c", LAUNCHER],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run does not reach it first
        )
    server = Phoenix(http_port=http_port, grpc_port=grpc_port, log=log, process=process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (
                f"Phoenix exited ({process.returncode}):\n{server.log_tail()}"
            )
            try:
                with LOCAL_HTTP.open(f"{server.base_url}/readyz", timeout=5) as response:
                    # Phoenix starts its gRPC server before it reports ready.
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, (
                f"Phoenix not ready in {START_TIMEOUT_S} s:\n{server.log_tail()}"
            )
            time.sleep(0.25)
        TIMINGS["Phoenix start"] = time.monotonic() - started
        if Path("/proc/net/tcp").exists():  # Linux: check where it really listens
            for port in (http_port, grpc_port):
                addresses = listening_addresses(port)
                assert addresses and addresses <= LOOPBACK, f"port {port} listens on {addresses}"
        yield server
    finally:
        _stop(process)


@dataclass
class OTLPRecorder:
    """What an OTLP/HTTP proxy in front of Phoenix saw: the decoded export requests."""

    port: int
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[dict[str, object], object, object]]:
        """(resource attributes, scope name, span) for every span received so far."""
        out: list[tuple[dict[str, object], object, object]] = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {
                    kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                    for kv in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append((resource, scope_spans.scope.name, span))
        return out


@pytest.fixture
def otlp_recorder(phoenix: Phoenix) -> Iterator[OTLPRecorder]:
    """An OTLP/HTTP endpoint on 127.0.0.1 that records each request and passes it to Phoenix.

    Phoenix drops span links on ingestion, so links are checked on the wire, here.
    """
    recorder = OTLPRecorder(port=0)
    target = phoenix.base_url

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
            request = ExportTraceServiceRequest()
            request.ParseFromString(raw)
            with recorder.lock:
                recorder.requests.append(request)
            headers = {
                name: value
                for name in ("Content-Type", "Content-Encoding")
                if (value := self.headers.get(name))
            }
            forward = urllib.request.Request(
                target + self.path, data=body, headers=headers, method="POST"
            )
            try:
                with LOCAL_HTTP.open(forward, timeout=30) as response:
                    status, answer = response.status, response.read()
                    content_type = response.headers.get("Content-Type", "application/x-protobuf")
            except urllib.error.HTTPError as error:
                status, answer = error.code, error.read()
                content_type = error.headers.get("Content-Type", "text/plain")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's output is for the test

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    recorder.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="otlp-recorder", daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
