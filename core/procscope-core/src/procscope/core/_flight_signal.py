"""``procscope dump PID``: a signal (SIGUSR2) that makes a running process dump its ring.

Installed by ``setup()`` only where the program left SIGUSR2 at its default (whose action
would kill the process): a handler of the program's own is never replaced. A process with
ours leaves a marker file, ``<tmp>/procscope-dump-<uid>/<pid>``, holding its start time
(from ``/proc``); the CLI signals a pid only when the marker is there, its start time
matches (not a recycled pid) and ``/proc/<pid>/status`` says SIGUSR2 is caught, so that
it never kills a process that has no handler.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from . import flight

SIGNAL = getattr(signal, "SIGUSR2", None)
REASON = "procscope dump"
_installed: list[Any] = []


def marker_dir() -> str:
    import tempfile  # (here: about 2 ms, and only a process that installs it needs it)

    return os.path.join(tempfile.gettempdir(), f"procscope-dump-{os.getuid()}")


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (``/proc/<pid>/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as source:
            text = source.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def catches(pid: int, signum: int) -> bool:
    """Whether ``/proc/<pid>/status`` says the process has a handler for ``signum``."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as source:
            for line in source:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def _write_marker() -> None:
    folder = marker_dir()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(os.path.join(folder, str(os.getpid())), "w", encoding="ascii") as out:
            out.write(start_time(os.getpid()) or "")
    except OSError:
        pass


def remove_marker(pid: int | None = None) -> None:
    try:
        os.unlink(os.path.join(marker_dir(), str(pid or os.getpid())))
    except OSError:
        pass


def _on_signal(signum: int, frame: Any) -> None:
    # Runs on the main thread between two bytecodes, maybe while that thread is inside a
    # dump holding its lock: the dump runs on a thread of its own, never waited for here.
    if flight.append is None:
        return
    try:
        threading.Thread(target=flight.dump, args=(REASON,), name="procscope-flight-dump",
                         daemon=True).start()
    except RuntimeError:
        pass


def install() -> bool:
    """Install the handler where SIGUSR2 is at its default, on the main thread."""
    if SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(SIGNAL) is not signal.SIG_DFL:
            return False
        signal.signal(SIGNAL, _on_signal)
    except (ValueError, OSError):
        return False
    _installed[:] = [os.getpid()]
    _write_marker()
    return True


def after_fork_in_child() -> None:
    """A fork child inherits the handler: it gets a marker of its own."""
    if _installed and SIGNAL is not None and signal.getsignal(SIGNAL) is _on_signal:
        _write_marker()


def uninstall() -> None:
    if not _installed or SIGNAL is None:
        return
    _installed.clear()
    remove_marker()
    try:
        if signal.getsignal(SIGNAL) is _on_signal:
            signal.signal(SIGNAL, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def ask(pid: int) -> str | None:
    """Signal ``pid`` to dump; None when done, else why not (for the CLI's one line)."""
    if SIGNAL is None:
        return "this system has no SIGUSR2"
    try:
        with open(os.path.join(marker_dir(), str(pid)), encoding="ascii") as source:
            started = source.read().strip()
    except OSError:
        return "no process of this user with procscope's flight recorder has that pid"
    if not started or started != start_time(pid):
        remove_marker(pid)
        return "that process is gone"
    if not catches(pid, SIGNAL):
        return "that process does not handle SIGUSR2"
    try:
        os.kill(pid, SIGNAL)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
