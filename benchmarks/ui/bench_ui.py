"""procscope ui on the 1,000,000-span DB: API latency over HTTP and the first page load
in a real browser (Debian's Chromium through Playwright).

    python benchmarks/ui/bench_ui.py [--rounds 3]

Each round serves the DB afresh (nothing cached) on the latest run and times, over plain
HTTP: the overview, the whole run's window, ten pans of 1/200 of the run, ten cursor
positions; then, in Chromium, from navigation to the first window drawn
(``body[data-ready=1]``). Prints a Markdown table (median and worst over rounds).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "tracedb"))

from big_db import cached_big_db  # noqa: E402

from procscope._ui import Viewer, ViewerServer  # noqa: E402
from procscope.exporters.tracedb import TraceDB  # noqa: E402


def _get(port: int, path: str) -> tuple[float, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path)
    body = conn.getresponse().read()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, json.loads(body)


def one_round(path: str, run: str) -> dict[str, float]:
    out: dict[str, float] = {}
    viewer = Viewer(path, run)
    server = ViewerServer(viewer, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.port
        out["overview"], overview = _get(port, "/api/overview")
        d = overview["duration"]
        out["window: whole run"], _ = _get(port, f"/api/window?start=0&end={d}&px=1500")
        pans = [
            _get(port, f"/api/window?start={d * k // 10}&end={d * k // 10 + d // 200}&px=1500")[0]
            for k in range(10)
        ]
        out["window: pan (1/200 of the run), worst of 10"] = max(pans)
        cursors = [_get(port, f"/api/cursor?at={d * k // 10}")[0] for k in range(10)]
        out["cursor, worst of 10"] = max(cursors)
    finally:
        server.shutdown()
        server.server_close()
        viewer.close()
    return out


def page_load(path: str, run: str) -> float:
    from playwright.sync_api import sync_playwright

    viewer = Viewer(path, run)
    server = ViewerServer(viewer, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                      "--no-first-run", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            started = time.perf_counter()
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            elapsed = time.perf_counter() - started
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        viewer.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = cached_big_db()
    with TraceDB(path) as db:
        run = db.latest_run_id()
        spans = db.span_count()
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for key, value in one_round(path, run).items():
            rows.setdefault(key, []).append(value)
        if os.path.exists("/usr/bin/chromium"):
            rows.setdefault("page: navigation to first window drawn (Chromium)", []).append(
                page_load(path, run)
            )
    load = os.getloadavg()[0]
    print(f"DB: {spans:,} spans, latest run {run}; {args.rounds} rounds, load {load:.1f}")
    print("| what | median | worst |\n| --- | --- | --- |")
    for key, values in rows.items():
        print(f"| {key} | {statistics.median(values):.3f} s | {max(values):.3f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
