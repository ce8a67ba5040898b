"""``procscope ui``: a timeline of a recorded run in the browser (docs/viewer.md).

:func:`serve` runs the server until Ctrl-C; :class:`ViewerServer` and :class:`Viewer`
are the pieces, for tests and benchmarks that serve in a thread of their own.
"""

from __future__ import annotations

import os
import sys
import threading
import webbrowser

from ._api import ApiError, Viewer
from ._server import ViewerServer

__all__ = ["ApiError", "Viewer", "ViewerServer", "can_open_browser", "open_browser"]


def can_open_browser() -> bool:
    """False on a Linux or BSD machine without a display (over ssh, in a container):
    webbrowser would then start a text browser in our terminal, or nothing."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def open_browser(url: str) -> None:
    """Open ``url`` in a browser from a daemon thread: some browsers' launchers wait for
    the browser to exit, and the server must go on answering meanwhile."""

    def run() -> None:
        try:
            webbrowser.open(url)
        except Exception:  # noqa: BLE001 -- no browser is fine: the URL is printed
            pass

    threading.Thread(target=run, name="procscope-ui-browser", daemon=True).start()
