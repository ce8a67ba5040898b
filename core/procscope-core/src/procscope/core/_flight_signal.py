"""``procscope dump PID``: a signal (SIGUSR2) that makes a running process dump its ring.

Installed by ``setup()`` only where the program left SIGUSR2 at its default (whose action
would kill the process): a handler of the program's own is never replaced. A process with
ours leaves a marker file, ``<tmp>/procscope-dump-<uid>/<pid>``, holding its start time
(from ``/proc``); the CLI signals a pid only when the marker is there, its start time
matches (not a recycled pid) and ``/proc/<pid>/status`` says SIGUSR2 is caught, so that
it never kills a process that has no handler.

A ``multiprocessing`` fork child writes its marker on its mirror thread's first tick, not
at the fork (:func:`defer_fork_marker`): the write touched some 130 pages of memory that
the child shares with its parent, each copied, about 0.5 ms of every fork's start; a
child that lives less than a tick never writes one. A child removes its own marker at its
end, and a parent removes the marker of a child it reaps after a signal or a bare
``os.fork`` (whose child ends by ``os._exit``); ``procscope dump`` removes the markers of
processes that are gone (:func:`sweep`).
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
# Set on the forking thread while multiprocessing forks a child that starts a mirror.
_deferring = threading.local()
# This process's marker: the pid it was written for (0: none), and whether it is to be
# written by the mirror's thread; changed under _marker_lock (that thread and the
# child's end may race).
_marker: dict[str, Any] = {"written": 0, "pending": False}
_marker_lock = threading.Lock()


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
    pid = os.getpid()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(folder, str(pid)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o644)  # fmt: skip
        try:
            os.write(fd, (start_time(pid) or "").encode("ascii"))
        finally:
            os.close(fd)
    except OSError:
        return
    _marker["written"] = pid


def remove_marker(pid: int | None = None) -> None:
    try:
        os.unlink(os.path.join(marker_dir(), str(pid or os.getpid())))
    except OSError:
        pass


def defer_fork_marker(on: bool) -> None:
    """Around a ``multiprocessing`` fork (on the forking thread): the child's marker is
    written by its mirror's thread (:func:`write_pending_marker`), not at the fork."""
    _deferring.on = on


def write_pending_marker() -> None:
    """Write the marker a fork child deferred (see :func:`defer_fork_marker`)."""
    with _marker_lock:
        if _marker["pending"]:
            _marker["pending"] = False
            if _handles_it():
                _write_marker()


def _handles_it() -> bool:
    return bool(_installed) and SIGNAL is not None and signal.getsignal(SIGNAL) is _on_signal


def process_ended() -> None:
    """This process ends: its marker removed (or never written)."""
    with _marker_lock:
        _marker["pending"] = False
        if _marker["written"] == os.getpid():
            _marker["written"] = 0
            remove_marker()


def forget_child(pid: int) -> None:
    """A child reaped by this process: its marker removed, if it left one."""
    if _installed:
        remove_marker(pid)


def sweep() -> int:
    """Remove the markers of processes that are gone (a pid whose start time differs is
    another process); how many."""
    folder = marker_dir()
    removed = 0
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        path = os.path.join(folder, entry)
        try:
            with open(path, encoding="ascii", errors="replace") as source:
                started = source.read().strip()
        except OSError:
            continue
        if started and started == start_time(int(entry)):
            continue
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


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
    """A fork child inherits the handler: it gets a marker of its own (now, or on its
    mirror's first tick)."""
    global _marker_lock
    _marker_lock = threading.Lock()  # (a thread of the parent may have held it)
    deferred = getattr(_deferring, "on", False)
    _deferring.on = False
    _marker["written"] = 0
    # (deferred: whether the handler is still ours is asked when the marker is written;
    # signal.getsignal() alone, with its enum look-up, touched some 30 pages here)
    _marker["pending"] = deferred and bool(_installed)
    if not deferred and _handles_it():
        _write_marker()


def uninstall() -> None:
    if not _installed or SIGNAL is None:
        return
    _installed.clear()
    with _marker_lock:
        _marker["pending"] = False
        _marker["written"] = 0
    remove_marker()
    try:
        if signal.getsignal(SIGNAL) is _on_signal:
            signal.signal(SIGNAL, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def _parent_of(pid: int) -> int | None:
    """The parent's pid (``/proc/<pid>/stat`` field 4)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as source:
            fields = source.read().decode(errors="replace").rpartition(")")[2].split()
        return int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _has_live_marker(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(os.path.join(marker_dir(), str(pid)), encoding="ascii") as source:
            started = source.read().strip()
    except OSError:
        return False
    return bool(started) and started == start_time(pid)


def ask(pid: int) -> str | None:
    """Signal ``pid`` to dump; None when done, else why not (for the CLI's one line)."""
    if SIGNAL is None:
        return "this system has no SIGUSR2"
    try:
        with open(os.path.join(marker_dir(), str(pid)), encoding="ascii") as source:
            started = source.read().strip()
    except OSError:
        if catches(pid, SIGNAL) and _has_live_marker(_parent_of(pid)):
            return ("its marker is not written yet (a multiprocessing fork child writes it "
                    "0.1 s after it starts): try again")
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
