"""How to run procscope again, as the user can paste it into the same shell.

``procscope`` itself when the PATH finds this very script; otherwise the path it was
started by (``.venv/bin/procscope`` after ``make demo``), or ``python -m procscope``.
Imported by ``procscope run``, which execs the program at once: os and shlex only.
"""

from __future__ import annotations

import os
import shlex
import sys

ACTIVATE_HINT = "(procscope is not on your PATH: 'source {activate}' puts it there)"


def which(command: str) -> str | None:
    """``shutil.which(command)`` on POSIX, without importing shutil (and the compression
    modules it imports): the executable file the PATH finds, or None."""
    if os.sep in command:
        candidates = [command]
    else:
        path = os.environ.get("PATH", os.defpath)
        folders = path.split(os.pathsep)
        candidates = [os.path.join(folder or os.curdir, command) for folder in folders]
    for candidate in candidates:
        if os.access(candidate, os.F_OK | os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def procscope_command() -> str:
    """The shell words that start this procscope (quoted as needed)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or os.path.basename(argv0) in ("__main__.py", "-c", "-m"):
        return f"{shlex.quote(sys.executable)} -m procscope"
    on_path = which("procscope")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "procscope"
    # A relative path was typed in this folder (make demo: .venv/bin/procscope): the
    # user's shell is here too. Anything else (a bare name the PATH did not resolve to
    # this script) is given whole.
    if os.sep in argv0 and not os.path.isabs(argv0) and os.path.exists(argv0):
        return shlex.quote(argv0)
    return shlex.quote(os.path.abspath(argv0))


def activate_hint(command: str) -> str | None:
    """One line saying how to put procscope on the PATH, when ``command`` is a path to a
    virtual environment's procscope (None otherwise)."""
    if command == "procscope" or " " in command:
        return None
    activate = os.path.join(os.path.dirname(shlex.split(command)[0]), "activate")
    return ACTIVATE_HINT.format(activate=activate) if os.path.exists(activate) else None
