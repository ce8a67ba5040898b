"""The viewer's HTTP server: 127.0.0.1 only, GET only, the page's files and the JSON API.

Safety, as the page shows recorded data of a program (names, message contents, stacks)
that may hold anything:

* it listens on 127.0.0.1 and answers only requests whose ``Host`` is ``127.0.0.1:PORT``
  or ``localhost:PORT``: a web page elsewhere that rebinds its own DNS name to 127.0.0.1
  (DNS rebinding) sends its own name as Host and is refused;
* GET and HEAD only; any other method is 405 (nothing can be changed through it);
* the DB is opened read-only (``TraceDB``: ``mode=ro``);
* a Content-Security-Policy allows only the server's own script and style (no inline
  script, no other origin), and the page puts every recorded string in with
  ``textContent``, never as HTML.

One thread per request (``ThreadingHTTPServer``): a slow query does not hold back the
page's other requests; the DB connections are pooled by :class:`~._api.Viewer`.
"""

from __future__ import annotations

import http.server
import json
import sqlite3
import sys
import urllib.parse
from importlib import resources
from typing import Any

from procscope.exporters.tracedb import TraceDBError

from ._api import ApiError, Viewer

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the installed package (no path from a request
    ever reaches the file system)."""
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("procscope._ui") / "static"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return files


class ViewerServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A restarted viewer takes its port back at once, not after TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, viewer: Viewer, port: int = 0, *, quiet: bool = True) -> None:
        self.viewer = viewer
        self.files = _static_files()
        self.quiet = quiet
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "procscope-ui"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write("procscope ui: " + (format % args) + "\n")

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":"), default=str).encode()
        self._send(status, body, "application/json")

    def _refuse_method(self) -> None:
        body = json.dumps({"error": f"{self.command} is not allowed: this server is read-only"})
        self._send(405, body.encode(), "application/json", Allow="GET, HEAD")

    # http.server's names: one handler per method.
    do_POST = do_PUT = do_DELETE = _refuse_method  # noqa: N815
    do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815
    do_TRACE = do_CONNECT = _refuse_method  # noqa: N815

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.headers.get("Host", "") not in self.server.allowed_hosts():
            self._json(403, {"error": "this server answers only to 127.0.0.1 and localhost"})
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/api/"):
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            try:
                self._json(200, self.server.viewer.get(url.path, params))
            except ApiError as exc:
                self._json(exc.status, {"error": str(exc)})
            except (sqlite3.Error, TraceDBError) as exc:
                self._json(
                    500, {"error": f"cannot read the trace DB: {' '.join(str(exc).split())}"}
                )
            return
        name = "index.html" if url.path in ("/", "/index.html") else url.path.rpartition("/")[2]
        found = self.server.files.get(name) if url.path.count("/") <= 2 else None
        if found is None:
            self._json(404, {"error": "not found"})
            return
        self._send(200, *found)
