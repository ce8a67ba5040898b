"""The descriptors SQLite opens for a writer, noted so that a program closing them is seen.

A program may close descriptors it does not own (``os.closerange`` in a fork child, a
double close) and get their numbers back for files of its own; SQLite would then write
its pages into them without an error. The writer notes the descriptors its connection
opened on the DB, its -wal and its -shm (:func:`own_fds`), and checks them before each
batch (``Writer.fds_intact``). Linux only: elsewhere nothing is noted or checked.
"""

from __future__ import annotations

import os

from procscope.core.forksafe import ForkSafeLock


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a file, or None if it is gone."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


_FD_DIR = "/proc/self/fd"
# Taken around a writer's open (see Writer.__init__); new in each process, so that a fork
# child never waits on a copy that a parent's thread held.
OPENING = ForkSafeLock()


def open_fds() -> set[str] | None:
    """The numbers of this process's open descriptors, or None where /proc cannot tell."""
    try:
        return set(os.listdir(_FD_DIR))
    except OSError:
        return None


def own_fds(before: set[str] | None, path: str) -> dict[int, tuple[int, int]]:
    """The descriptors opened since ``before`` on the DB, its -wal or its -shm, each with
    the (device, inode) it refers to."""
    after = open_fds()
    if before is None or after is None:
        return {}
    files = {file_identity(path + suffix) for suffix in ("", "-wal", "-shm")} - {None}
    fds: dict[int, tuple[int, int]] = {}
    for name in after - before:
        try:
            fd = int(name)
            info = os.fstat(fd)
        except (ValueError, OSError):
            continue
        if (info.st_dev, info.st_ino) in files:
            fds[fd] = (info.st_dev, info.st_ino)
    return fds


def on_read_only_fs(path: str) -> bool:
    """Whether the file system holding ``path``'s folder is mounted read-only."""
    try:
        return bool(os.statvfs(os.path.dirname(path) or ".").f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False
