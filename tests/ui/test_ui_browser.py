"""The viewer in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB

from .conftest import HOSTILE, artifacts_dir

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def _open(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.errors = errors
    return page


def test_demo_timeline_lanes_arrows_cursor_details(
    browser: Any, demo_server: Any, demo_db: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The demo's page: a lane per process (HTML labels), an arrow per received message,
    the cursor after the ledger's last change shows its state, a click shows details."""
    with TraceDB(demo_db) as db:
        processes = db.processes()
        received = [m for m in db.messages() if m.receiver is not None]
        last = db.state_history("ledger")[-1]
        state = db.state_at("ledger", last.time_ns)
    page = _open(browser, demo_server.url)
    labels = page.locator(".row.process .label").all_inner_texts()
    assert len(labels) == len(processes)
    for process in processes:
        assert any(f":{process.pid}" in label for label in labels)
    assert page.locator("line.arrow:not(.unreceived)").count() == len(received)

    t0 = int(page.evaluate("String(window.procscope.state.t0)"))
    page.evaluate(f"window.procscope.setCursor({last.time_ns - t0})")
    box = page.locator("#cursor-panel .obj-state[data-object='ledger']")
    box.wait_for(timeout=10_000)
    assert state is not None
    text = box.inner_text()
    for field, value in state.fields.items():
        assert field in text and str(value)[:40] in text
    assert box.locator("tr.changed").count() == len(set(last.fields))

    page.locator(".mark.end.error").first.click()
    page.wait_for_selector("#details pre.stack", timeout=10_000)
    assert "RuntimeError" in page.locator("#details").inner_text()

    shot = artifacts_dir(tmp_path_factory) / "viewer-demo.png"
    page.screenshot(path=str(shot))
    if os.environ.get("PROCSCOPE_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMAGES / "viewer-demo.png")
    assert page.errors == []
    page.close()


def test_recorded_names_are_shown_as_text_never_as_html(browser: Any, hostile_server: Any) -> None:
    """A thread, queue and traced object named with an <img onerror> and control
    characters appear as text; no element is made from them and no script runs."""
    page = _open(browser, hostile_server.url)
    page.evaluate("window.procscope.setCursor(window.procscope.state.duration)")
    page.wait_for_selector("#cursor-panel .obj-state", timeout=10_000)
    page.locator(".row.object .mark.state").first.click()
    page.wait_for_selector("#details h3", timeout=10_000)
    page.locator("line.arrow").first.dispatch_event("click")
    page.wait_for_selector("#details .queue", timeout=10_000)
    visible = page.locator("body").inner_text()
    assert "<img src=x onerror=window.__xss=1>" in visible
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__xss === undefined")
    assert HOSTILE.strip("\x07\x1b[31m") in page.locator(".row.thread .label").first.inner_text()
    page.close()
