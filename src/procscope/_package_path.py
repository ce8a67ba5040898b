"""``pkgutil.extend_path`` for procscope's package, without pkgutil."""

from __future__ import annotations

import os
import sys


def extend_path(path: list[str]) -> list[str]:
    """``pkgutil.extend_path(path, "procscope")``: ``path`` with every other ``procscope``
    folder on ``sys.path`` after it.

    In a development checkout every distribution has its own ``src/procscope`` folder;
    installed from wheels they all share one folder and this is a no-op. Not pkgutil's
    own: importing pkgutil (importlib.util, and what that imports) cost every Python that
    imports procscope, ``procscope run``'s launcher included, a few milliseconds. The
    ``.pkg`` files pkgutil also reads are not used here.
    """
    found = list(path)
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        folder = os.path.join(entry or os.curdir, "procscope")
        if folder not in found and os.path.isdir(folder):
            found.append(folder)
    return found
