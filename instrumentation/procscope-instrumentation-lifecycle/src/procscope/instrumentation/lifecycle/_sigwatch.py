"""Making sure procscope's SIGTERM handler runs in a child whose main thread is blocked.

A Python signal handler runs only on the main thread, between two bytecodes. CPython's C
handler, which the kernel runs, just notes the signal; a main thread blocked in a system
call is woken (``EINTR``) and runs the Python handler. But if the signal arrives a moment
before the main thread blocks (past its last check for signals, before the system call),
nothing wakes it again: with a Python handler installed, the process then sleeps for
ever, where with the default action it would have died. Measured here: a
``multiprocessing.Pool`` worker terminated by its pool (blocked on the pool's queue lock)
hung that way about once in 50 pools, the parent's ``join`` with it.

So in a child where procscope replaces the default SIGTERM action, a watcher thread
listens on CPython's wakeup fd (``signal.set_wakeup_fd``: the C handler writes each signal's
number there, whatever thread it ran on). When SIGTERM comes and procscope's handler has
not started shortly after, the watcher sends SIGTERM again to the main thread itself
(``pthread_kill``), which interrupts its system call; it keeps doing so until the handler
starts. The wakeup fd is taken only if nobody holds it (asyncio's ``add_signal_handler``
takes it over later, which only turns this safety net off for that process).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from procscope.core.threadinfo import on_main_thread

# The first wait for the handler, then doubling up to the last (seconds).
FIRST_KICK_S = 0.05
LAST_KICK_S = 0.5

_started = [False]  # procscope's SIGTERM handler has started in this process
_watch: dict[str, Any] = {}  # "pid", "read", "write" of this process's watch


def handler_started() -> None:
    """Called first thing by procscope's SIGTERM handler."""
    _started[0] = True


def ensure_watch() -> None:
    """Start the watch in this process, once; from the main thread only."""
    if _watch.get("pid") == os.getpid():
        return
    if not on_main_thread():
        return
    read_fd, write_fd = os.pipe()  # close-on-exec, as os.pipe makes them
    try:
        os.set_blocking(write_fd, False)  # set_wakeup_fd refuses a blocking fd
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_fd)
        os.close(write_fd)
        return
    if previous != -1:
        # Somebody else's (an event loop's): give it back, and do without.
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return
    _watch.update(pid=os.getpid(), read=read_fd, write=write_fd)
    _started[0] = False
    watcher = threading.Thread(
        target=_watch_for_sigterm,
        args=(read_fd, threading.main_thread().ident),
        name="procscope-sigterm-watch",
        daemon=True,
    )
    watcher.start()


def forget_after_fork() -> None:
    """In a fork child: the wakeup fd is the parent's pipe, which the parent's watcher
    reads; a signal of this child must never reach it. Called from the main thread."""
    if not _watch or _watch.get("pid") == os.getpid():
        return
    write_fd = _watch.get("write")
    try:
        if signal.set_wakeup_fd(-1) != write_fd:
            signal.set_wakeup_fd(-1)  # not ours after all: leave what was there
    except (ValueError, OSError):
        pass
    for key in ("read", "write"):
        try:
            os.close(_watch[key])
        except (KeyError, OSError):
            pass
    _watch.clear()
    _started[0] = False


def stop() -> None:
    """Give the wakeup fd back (uninstrument); the watcher ends at the pipe's end."""
    if _watch.get("pid") != os.getpid():
        return
    try:
        if on_main_thread():
            current = signal.set_wakeup_fd(-1)
            if current != _watch["write"]:
                signal.set_wakeup_fd(current)  # somebody else's by now: theirs
    except (ValueError, OSError):
        pass
    try:
        os.close(_watch["write"])
    except OSError:
        pass
    _watch.clear()


def _watch_for_sigterm(read_fd: int, main_ident: int | None) -> None:
    # SIGTERM must reach the main thread, never this one.
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (AttributeError, OSError, ValueError):
        pass
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:  # stop(): the write end is closed
            try:
                os.close(read_fd)
            except OSError:
                pass
            return
        if signal.SIGTERM not in data or main_ident is None:
            continue
        wait = FIRST_KICK_S
        while not _started[0]:
            time.sleep(wait)
            if _started[0]:
                break
            try:
                signal.pthread_kill(main_ident, signal.SIGTERM)
            except (OSError, ValueError):
                return
            wait = min(wait * 2, LAST_KICK_S)
