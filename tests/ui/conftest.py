"""Fixtures for the viewer's tests: a recorded demo, a hostile recording, a served viewer,
one Chromium for the whole session (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procscope._ui import Viewer, ViewerServer

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = "<img src=x onerror=window.__xss=1>\x07\x1b[31m"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    return env


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``procscope demo`` recorded once per session."""
    path = str(tmp_path_factory.mktemp("ui-demo") / "demo.db")
    subprocess.run(
        [str(BIN / "procscope"), "demo", "--db", path],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@pytest.fixture(scope="session")
def hostile_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A recording whose queue, thread and traced object names are HTML and control
    characters."""
    folder = tmp_path_factory.mktemp("ui-hostile")
    app = folder / "app.py"
    app.write_text(
        textwrap.dedent(
            f"""
            import queue, threading
            import procscope
            NAME = {HOSTILE!r}

            class Box:
                def __init__(self):
                    self.value = NAME

                def put(self, v):
                    self.value = v

            procscope.trace_state(Box, name=NAME)
            box = Box()
            q = procscope.name(queue.Queue(), NAME)

            def work():
                q.put(NAME)
                box.put(NAME + "!")

            t = threading.Thread(target=work, name=NAME)
            t.start()
            t.join()
            q.get()
            """
        )
    )
    path = str(folder / "hostile.db")
    subprocess.run(
        [str(BIN / "procscope"), "run", "--db", path, "--", sys.executable, str(app)],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=120,
        cwd=folder,
    )
    return path


class Served:
    def __init__(self, path: str) -> None:
        self.viewer = Viewer(path)
        self.server = ViewerServer(self.viewer, 0)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.viewer.close()


@pytest.fixture(scope="session")
def demo_server(demo_db: str) -> Iterator[Served]:
    served = Served(demo_db)
    yield served
    served.close()


@pytest.fixture(scope="session")
def hostile_server(hostile_db: str) -> Iterator[Served]:
    served = Served(hostile_db)
    yield served
    served.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $PROCSCOPE_ARTIFACTS, else the session's tmp folder."""
    given = os.environ.get("PROCSCOPE_ARTIFACTS")
    folder = Path(given) if given else tmp_path_factory.getbasetemp() / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
