"""The viewer's JSON API over plain HTTP: what it answers, and what it refuses."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from procscope.exporters.tracedb import TraceDB

BIN = Path(sys.executable).parent


def _get(url: str, path: str, *, method: str = "GET", host: str | None = None) -> tuple[int, Any]:
    port = int(url.rstrip("/").rpartition(":")[2])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host} if host else {}
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, json.loads(body) if body.startswith(b"{") else body


def test_overview_has_a_lane_per_recorded_process(demo_server: Any, demo_db: str) -> None:
    """Every process of the demo has a lane, in process-tree order (parent first)."""
    status, body = _get(demo_server.url, "/api/overview")
    assert status == 200
    with TraceDB(demo_db) as db:
        processes = db.processes()
        pids = [p.pid for p in processes]
        crashed_pids = [p.pid for p in processes if p.error]
    lanes = [lane for lane in body["lanes"] if lane["kind"] == "process"]
    assert sorted(lane["pid"] for lane in lanes) == sorted(pids)
    first = lanes[0]
    assert all(lane["parent"] == first["id"] for lane in lanes[1:])
    crashed = [lane for lane in lanes if lane["error"]]
    assert [lane["pid"] for lane in crashed] == crashed_pids and crashed_pids
    assert "RuntimeError" in crashed[0]["end_mark"]
    assert body["objects"] == ["ledger"]


def test_window_draws_an_arrow_for_every_message(demo_server: Any, demo_db: str) -> None:
    """The whole run's window has one arrow per message, from the sender's lane to the
    receiver's, as TraceDB.messages() counts them."""
    _, overview = _get(demo_server.url, "/api/overview")
    status, body = _get(demo_server.url, f"/api/window?start=0&end={overview['duration']}&px=800")
    assert status == 200 and body["mode"] == "spans"
    with TraceDB(demo_db) as db:
        messages = db.messages()
        span_count = db.span_count()
    assert len(body["spans"]) == span_count
    received = [m for m in messages if m.receiver is not None]
    arrows = [a for a in body["messages"] if a["to"] is not None]
    assert len(arrows) == len(received) > 0
    assert {a["id"] for a in arrows} == {m.message_id for m in received}
    by_pid = {lane["pid"]: lane["id"] for lane in overview["lanes"] if lane["kind"] == "process"}
    for message in received:
        arrow = next(a for a in arrows if a["id"] == message.message_id)
        assert arrow["from"] == by_pid[message.sender.pid]
        assert arrow["to"] == by_pid[message.receiver.pid]


def test_cursor_shows_the_state_at_an_instant(demo_server: Any, demo_db: str) -> None:
    """The cursor's state of the ledger after its last change is TraceDB.state_at's, with
    the diff of that change."""
    _, overview = _get(demo_server.url, "/api/overview")
    t0 = int(overview["t0_ns"])
    with TraceDB(demo_db) as db:
        last = db.state_history("ledger")[-1]
        expected = db.state_at("ledger", last.time_ns)
    at = last.time_ns - t0
    status, body = _get(demo_server.url, f"/api/cursor?at={at}")
    assert status == 200
    (ledger,) = [o for o in body["objects"] if o["object"] == "ledger"]
    assert expected is not None and ledger["fields"] == expected.fields
    assert ledger["changed_at"] == at
    changed = {f["field"] for f in ledger["last_change"]["fields"]}
    assert changed == set(last.fields)


def test_span_details_and_search(demo_server: Any) -> None:
    """A span found by name has its attributes and the crash's stack among its events."""
    status, found = _get(demo_server.url, "/api/search?q=process%20pricer")
    assert status == 200 and found["spans"]
    details = [_get(demo_server.url, f"/api/span?pk={s['pk']}")[1] for s in found["spans"]]
    (span,) = [d for d in details if d["status"] == "ERROR"]
    status = 200
    assert status == 200 and span["status"] == "ERROR"
    assert span["attributes"]["procscope.process.name"].startswith("pricer-")
    (exception,) = [e for e in span["events"] if e["name"] == "exception"]
    assert "Traceback" in exception["attributes"]["exception.stacktrace"]


def test_bad_requests_are_refused(demo_server: Any) -> None:
    """Writes are 405, a foreign Host (DNS rebinding) 403, bad parameters 400, unknown 404."""
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _ = _get(demo_server.url, "/api/runs", method=method)
        assert status == 405
    port = demo_server.server.port
    assert _get(demo_server.url, "/api/runs", host=f"attacker.example:{port}")[0] == 403
    assert _get(demo_server.url, "/api/runs", host=f"localhost:{port}")[0] == 200
    assert _get(demo_server.url, "/api/window?start=x")[0] == 400
    assert _get(demo_server.url, "/api/span?pk=999999")[0] == 404
    assert _get(demo_server.url, "/api/nothing")[0] == 404
    assert _get(demo_server.url, "/../../etc/passwd")[0] == 404


def _default_sigint() -> None:
    # A suite started as a background job of a shell without job control (nohup, `cmd &`
    # in a script) inherits SIGINT ignored, and so would the server, which then never
    # sees the Ctrl-C this test sends: the server starts with the default disposition,
    # as in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_procscope_ui_serves_until_ctrl_c(demo_db: str) -> None:
    """`procscope ui --no-browser` prints its URL, answers, and exits 0 on Ctrl-C; an
    unreadable DB is exit 2 with one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    proc = subprocess.Popen(
        [str(BIN / "procscope"), "ui", "--db", demo_db, "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "http://127.0.0.1:" in line
        url = line.split(" at ")[1].split()[0]
        assert _get(url, "/api/runs")[0] == 200
        status, page = _get(url, "/")
        assert status == 200 and b"viewer.js" in page
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    bad = subprocess.run(
        [str(BIN / "procscope"), "ui", "--db", "/nonexistent/x.db", "--no-browser"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "cannot read trace DB" in bad.stderr


def test_a_million_span_run_is_sent_aggregated(big_db: str) -> None:
    """On the 1,000,000-span DB, the latest run's whole window comes as per-process
    counts per bucket (adding up to the run's span starts), not as spans; its task lanes
    are shared so that the lanes stay few."""
    from procscope._ui import Viewer
    from procscope._ui._lanes import MAX_TASK_LANES

    with TraceDB(big_db) as db:
        run = db.latest_run_id()
    viewer = Viewer(big_db, run)
    try:
        overview = viewer.get("/api/overview", {})
        threads = [lane for lane in overview["lanes"] if lane["kind"] == "thread"]
        tasks = [lane for lane in overview["lanes"] if lane["kind"] == "task"]
        assert tasks and len(tasks) <= MAX_TASK_LANES * (len(threads) + 1)
        assert sum(lane["tasks"] for lane in tasks) > len(tasks)
        window = viewer.get(
            "/api/window", {"start": "0", "end": str(overview["duration"]), "px": "1000"}
        )
        assert window["mode"] == "density"
        assert all(len(d["counts"]) == 1000 for d in window["density"])
        t0 = int(overview["t0_ns"])
        with TraceDB(big_db) as db:
            (starts,) = db.conn.execute(
                "SELECT count(*) FROM spans WHERE start_ns >= ? AND start_ns < ?",
                (t0, t0 + overview["duration"]),
            ).fetchone()
        assert sum(sum(d["counts"]) for d in window["density"]) == starts
    finally:
        viewer.close()
