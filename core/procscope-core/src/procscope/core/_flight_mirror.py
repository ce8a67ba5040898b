"""A child's flight recorder ring, mirrored to disk so that it survives SIGKILL.

A process killed by SIGKILL (or the OOM killer) runs no code of ours: its ring dies with
it. So in a child process the ring is also copied, every :data:`INTERVAL` seconds, by a
thread of ours (``procscope-flight-mirror``), into files of the program's hand-off
directory (``procscope.core.handoff``): ``flight-<pid>.rec`` and, once that file holds
half the memory cap, ``flight-<pid>.rec.old`` (the one before). Each write is one
length-prefixed ``marshal`` chunk of records already made into span values (names,
attributes with content scrubbed, times), appended with one ``write``: a reader sees
whole chunks only. Every record appended since the last tick is copied (up to the ring's
capacity: older ones were overwritten in the ring itself), in chunks of at most
:data:`BATCH` records, so that one write stays small and the GIL is let go between them.

When the parent learns that the child died by a signal, :func:`recover` reads the files
and writes their records, as spans under the child's pid and name, to the hand-off
spool, from which the top process exports them (within ``handoff.POLL_SECONDS``, or at
its shutdown). A child that ends otherwise has its files removed.
"""

from __future__ import annotations

import itertools
import marshal
import operator
import os
import struct
import sys
import threading
import time
from typing import Any

from . import flight, handoff, inherited
from .flight import F_A, F_CODE, F_THREAD, F_TIME, kind_of

INTERVAL = 0.1
# A message's record: (time, code, thread ident, kept item).
MESSAGE_LENGTH = 4
BATCH = 5_000
_LENGTH = struct.Struct(">I")
_code_of = operator.itemgetter(F_CODE)
_thread_of = operator.itemgetter(F_THREAD)
# "fd": the mirror file, opened before the child runs the program's code and kept
# open: opened at each tick, the child's count of open files changed while its code ran
# (CPython's test_child_fd_inflation, forkserver, saw one file more now and then).
_state: dict[str, Any] = {"thread": None, "pid": 0, "stop": False, "fd": None, "copier": None}


def _path(pid: int) -> str | None:
    folder = handoff._private_directory()
    return os.path.join(folder, f"flight-{pid}.rec") if folder else None


def start() -> None:
    """Start mirroring this process's ring (a child's), once per process."""
    if flight.append is None or _state["pid"] == os.getpid():
        return
    # Imported here, not in the thread: a thread importing it while another thread (or,
    # in a fork child, the parent's thread that forked mid-import) holds it half made
    # got ImportError "partially initialized module" (seen in test_multiprocessing_fork).
    try:
        from ._flight_spans import _thread_names
    except ImportError:
        return
    path = _path(os.getpid())
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    _state["pid"] = os.getpid()
    _state["stop"] = False
    _state["fd"] = fd
    copier = _state["copier"] = _Copier(_thread_names, path, fd)
    thread = threading.Thread(
        target=_run, args=(copier,), name="procscope-flight-mirror", daemon=True,
    )
    try:
        thread.start()
    except RuntimeError:
        _close(fd)
        return
    _state["thread"] = thread
    flight.mirrored = True


def after_fork_in_child() -> None:
    # The parent's mirror file is the parent's (its thread, which writes it, is not
    # here): closed, not inherited.
    fd, _state["fd"] = _state["fd"], None
    if fd is not None:
        _close(fd)
    _state["pid"] = 0
    _state["thread"] = None
    _state["copier"] = None
    flight.mirrored = False


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def stop() -> None:
    """Stop mirroring and remove this process's files (an end that dumped or was fine)."""
    _state["stop"] = True
    flight.mirrored = False
    forget(os.getpid())


def left_by(pid: int) -> bool:
    """Whether the child ``pid`` left its mirror behind: its end did not remove it, as
    when the dump of its end was cut short by its exit (see ``sync``)."""
    folder = handoff.directory()
    if not folder:
        return False
    path = os.path.join(folder, f"flight-{pid}.rec")
    return os.path.exists(path) or os.path.exists(path + ".old")


def forget(pid: int) -> None:
    path = _path(pid)
    if path:
        for name in (path, path + ".old"):
            try:
                os.unlink(name)
            except OSError:
                pass


def _run(copier: _Copier) -> None:
    # The file is closed by this thread alone, when it stops: closed by stop() on
    # another thread, its number could be reused by the program's next open() and this
    # thread's next write would land in the program's file.
    try:
        pid = copier.pid
        while not _state["stop"] and _state["pid"] == pid:
            time.sleep(INTERVAL)
            copier.copy_new()
            inherited.release()  # (a fork child's copy of its parent's ring)
            signals = sys.modules.get(flight._SIGNAL)
            if signals is not None:  # (a multiprocessing fork child's dump marker)
                signals.write_pending_marker()
    finally:
        with copier.lock:  # (not while sync() writes on another thread)
            copier.fd = None
            if _state["fd"] == copier.fd_number and _state["pid"] == os.getpid():
                _state["fd"] = None
                _close(copier.fd_number)


def sync() -> tuple[int, int] | None:
    """Copy the records not yet mirrored, now, on this thread: a dump is about to take
    the ring, and the records of the last tick (up to 100 ms) would otherwise reach the
    file only through the dump, which a child's exit may cut short (then the parent makes
    the recording from the file: see ``procscope.instrumentation.lifecycle._ending``)."""
    copier = _state["copier"]
    if copier is None or copier.pid != os.getpid():
        return None
    copier.copy_new()
    # Where the mirror is now: what drop_before() takes once the dump is staged.
    with copier.lock:
        if copier.fd is None:
            return None
        info = os.fstat(copier.fd)
        return info.st_ino, info.st_size


def drop_before(mark: tuple[int, int]) -> None:
    """The records mirrored before ``mark`` are staged in the trace DB (a dump's, see
    ``_flight_stage``): the mirror drops them, so that a parent recovering it after a
    SIGKILL does not make them into spans a second time."""
    copier = _state["copier"]
    if copier is None or copier.pid != os.getpid():
        return
    with copier.lock:
        if copier.fd is None:
            return
        try:
            os.unlink(copier.path + ".old")  # (older still)
        except OSError:
            pass
        inode, offset = mark
        info = os.fstat(copier.fd)
        if info.st_ino != inode or info.st_size <= offset:
            if info.st_ino == inode:  # (nothing after the mark: empty it)
                os.ftruncate(copier.fd, 0)
            return  # (another file since: every record in it came after the mark)
        with open(copier.path, "rb") as source:
            source.seek(offset)
            tail = source.read()
        # The rest becomes the file, under the same fd number (as _append's rotation).
        fresh = os.open(copier.path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fresh, tail)
            os.replace(copier.path + ".new", copier.path)
            os.dup2(fresh, copier.fd, inheritable=False)
        finally:
            os.close(fresh)


# Records looked at beyond the count of new ones: appends that land between reading the
# count and taking the records (another thread may run in between).
SLACK = 4096


class _Copier:
    """Where the mirror is in the ring (the newest record copied, the counter then) and
    its file. ``copy_new`` runs on the mirror's thread every tick, and on a dying thread
    through :func:`sync`: under one lock, so that no record is written twice or skipped."""

    def __init__(self, thread_names: Any, path: str, fd: int) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.thread_names = thread_names
        self.path = path
        self.fd: int | None = fd
        self.fd_number = fd
        self.last: tuple[Any, ...] | None = None  # the newest record copied so far
        self.last_count = 0
        self.sites: dict[int, Any] = {}  # code -> (kind name, site_plain), made once per code
        self.cap = (flight.settings() or (0, flight.DEFAULT_MEMORY))[1] // 2

    def copy_new(self) -> None:
        with self.lock:
            ring = flight._ring
            if ring is None or self.fd is None:
                return
            count = flight.appended(ring)
            if count == self.last_count:
                return  # nothing new: an idle child's tick costs next to nothing
            fresh = _new_records(ring, count - self.last_count, self.last)
            self.last_count = count
            if not fresh:
                return
            self.last = fresh[-1]
            # All of them: a busy child's copy costs in proportion to its records (about
            # a third of what making them cost), where a cap per tick would lose the older
            # records of every tick once the child is busier than the cap.
            for start in range(0, len(fresh), BATCH):
                try:
                    chunk = _chunk(fresh[start:start + BATCH], self.sites, self.thread_names)
                    _append(self.path, self.fd, chunk, self.cap)
                except Exception:  # noqa: BLE001 -- a value marshal refuses, a full disk: skip
                    continue


def _new_records(ring: Any, new: int, last: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
    """The records appended after ``last`` (the newest one copied before), oldest first;
    about ``new`` of them, by the ring's counter.

    Found by identity in the ring, not by count or time: the counter is read apart from
    the records (an append may come in between), and a record's time is taken before
    its append (a thread preempted there appends an older time after newer ones). The
    newest records are taken in one C call (no append runs meanwhile); ``last`` is held
    by this thread, so no other record has its identity. Not found: it was overwritten,
    and everything in the ring is new."""
    records = ring.records
    span = min(ring.capacity, new + SLACK)
    while True:
        newest = list(itertools.islice(reversed(records), span))
        if last is not None:
            try:  # (identity alone, in C: no record's __eq__ is asked)
                newest = newest[: operator.indexOf(map(operator.is_, newest,
                                                       itertools.repeat(last)), True)]
            except ValueError:
                if len(newest) == span < ring.capacity:
                    span = ring.capacity  # further back than the slack: the whole ring
                    continue
        newest.reverse()
        return newest


def _chunk(records: list[tuple[Any, ...]], sites: dict[int, Any], thread_names: Any) -> bytes:
    """One length-prefixed chunk: (the codes' kind and site, the threads' native id and
    name, then each record as (time, code, thread ident, its kind's plain data)). A
    message's record is that already (ints, strings): it is written as it is.
    ``thread_names(records)``: the threads' names (_flight_spans._thread_names)."""
    # Passes in C (map, set) where they can be: this runs for every record a child makes.
    if set(map(len, records)) == {MESSAGE_LENGTH}:
        rows: list[Any] = records  # (messages only, the usual tick: written as they are)
        others: list[tuple[Any, ...]] = []
    else:
        rows = [r for r in records if len(r) == MESSAGE_LENGTH]
        others = [r for r in records if len(r) != MESSAGE_LENGTH]
    # Only the other records can name a thread that has ended (its end record): the
    # names are looked for in those alone, not in every message (a pass less per record).
    names = thread_names(others)
    used: dict[int, Any] = {}
    for code in set(map(_code_of, records)):
        site = sites.get(code)
        if site is None:
            kind = flight.SITES[code][0]
            site = sites[code] = (kind.name, kind.site_plain(code))
        used[code] = site
    threads = {i: names.get(i) or (None, f"thread-{i}") for i in set(map(_thread_of, records))}
    for record in others:
        data = kind_of(record).plain(record)
        if data is not None:
            rows.append((record[F_TIME], record[F_CODE], record[F_THREAD], data))
    # Version 2: no back-references. Version 4 looks every tuple up in a table of
    # objects already written (a record is also held by the ring), which made the
    # dumps about a third slower; the records share nothing worth referring back to.
    body = marshal.dumps((used, threads, rows), 2)
    return _LENGTH.pack(len(body)) + body


def _append(path: str, fd: int, data: bytes, cap: int) -> None:
    try:
        if os.fstat(fd).st_size > cap:
            # The full file becomes the one before; a new file takes the same fd number
            # (dup2), so the process's count of open files is the same after as before.
            os.replace(path, path + ".old")
            new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.dup2(new, fd, inheritable=False)
            finally:
                os.close(new)
    except OSError:
        pass
    os.write(fd, data)


def read(pid: int) -> list[tuple[Any, ...]]:
    """The records a process mirrored (older file first), whole chunks only: (kind name,
    site, time, thread native id, thread name, plain data)."""
    path = _path(pid)
    found: list[tuple[Any, ...]] = []
    if not path:
        return found
    for name in (path + ".old", path):
        try:
            with open(name, "rb") as source:
                data = source.read()
        except OSError:
            continue
        at = 0
        while at + 4 <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
            if at + 4 + size > len(data):
                break
            try:
                used, threads, rows = marshal.loads(data[at + 4 : at + 4 + size])
                for when, code, ident, plain in rows:
                    kind_name, site = used[code]
                    native, name = threads[ident]
                    found.append((kind_name, site, when, native, name, plain))
            except (ValueError, EOFError, TypeError, KeyError):
                break
            at += 4 + size
    return found


class _Recovered(flight.FlightKind):
    """A record read back from a dead child's mirror: its own kind revives it."""

    name = "recovered"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        kind_name, site, at, _native, _name, data = record[F_A]
        kind = flight.KINDS.get(kind_name)
        return None if kind is None else kind.revive(site, data, at)


_RECOVERED = _Recovered()


# Spans written to the hand-off spool at a time: each chunk counts as progress for a
# shutdown waiting for the recovery (_flight_spans.wait_for_dumps).
RECOVER_CHUNK = 4096
# How long a recovery may write while it makes progress (a dead child that was very busy
# mirrored hundreds of thousands of records: seconds of encoding).
RECOVER_SECONDS = 30.0


def recover_later(pid: int, reason: str, process_name: str = "") -> None:
    """:func:`recover` on a helper thread (``procscope-flight-recover``): the caller is
    the program's thread that joined or waited for the child, which must not wait for
    the seconds a busy child's records take. A shutdown waits for it as for a dump."""
    from . import _flight_spans
    from .guard import handle_internal_errors

    def run() -> None:
        with handle_internal_errors():
            recover(pid, reason, process_name)

    _flight_spans.run_helper(run, _flight_spans.RECOVER_THREAD)


def store_staged_later(pid: int) -> None:
    """On a helper thread: the spans of the recordings the dead child ``pid`` staged in
    the trace DB and had not all stored (``_flight_stage.store_left``)."""
    from . import _flight_spans, _flight_stage
    from .guard import handle_internal_errors

    def run() -> None:
        with handle_internal_errors():
            exporter = staging_exporter()
            if exporter is not None:
                _flight_stage.store_left(pid, exporter)

    _flight_spans.run_helper(run, _flight_spans.RECOVER_THREAD)


def staging_exporter() -> Any:
    """The trace DB exporter of this process's pipeline, when it has one (it stages
    flight recordings: ``_flight_stage``), else None."""
    from . import _flight_spans

    _provider, processor = _flight_spans._provider()
    sink = _flight_spans._sink(processor)
    for exporter in (getattr(sink, "__self__", None), *_exporters(processor)):
        if getattr(exporter, "staged_rows", None) is not None:
            return exporter
    return None


def recover(pid: int, reason: str, process_name: str = "", window: float | None = None) -> int:
    """Make a dead child's mirrored records into a dump under its pid; returns how many."""
    from opentelemetry import trace

    from . import _flight_spans
    from .recorded import readable_from_plain

    plain = read(pid)
    forget(pid)
    if not plain:
        return 0
    seconds = window if window is not None else (flight.settings() or (30.0, 0))[0]
    oldest = time.time_ns() - int(seconds * 1e9)
    kept = sorted((p for p in plain if p[2] >= oldest), key=lambda p: p[2])
    # (a record's thread: a number of its own, for the dump's names)
    threads = {(p[3], p[4]): n for n, p in enumerate(kept)}
    records = [(p[2], _RECOVERED.code, threads[(p[3], p[4])], p, None, None) for p in kept]
    names = {n: key for key, n in threads.items()}
    trace_id, root_id = _flight_spans.new_ids()
    job = _flight_spans.Dump(reason, trace_id, root_id, None, records, 0,
                             len(plain) - len(kept), seconds, pid=pid, thread_names=names)
    provider = trace.get_tracer_provider()
    resource, scope = _flight_spans._origin(getattr(provider, "resource", None))
    exporters = _exporters(getattr(provider, "_active_span_processor", None))
    _flight_spans._handed[0] += 1
    plains = job.plains()
    deadline = time.monotonic() + RECOVER_SECONDS
    # The top process exports the spool, but at its shutdown only for a couple of
    # seconds: a large recovery would wait there for the next run. Where this process is
    # the top one and the exporter stores spans under another process (the trace DB's
    # export_from), the spans go to it directly instead.
    top = handoff.is_top_process()
    for start in range(0, len(plains), RECOVER_CHUNK):
        spans = [readable_from_plain(p, resource, scope)
                 for p in plains[start:start + RECOVER_CHUNK]]
        for exporter in exporters:
            export_from = getattr(exporter, "export_from", None) if top else None
            if export_from is not None:
                export_from(spans, pid, process_name)
            else:
                handoff.write(spans, handoff.exporter_key(exporter), deadline,
                              origin=(pid, process_name))
        _flight_spans._handed[0] += 1
    return len(kept)


def _exporters(processor: Any) -> list[Any]:
    """The exporters of the SDK batch processors behind ``processor`` (the provider's)."""
    pending, found, seen = [processor], [], 0
    while pending and seen < 32:
        current = pending.pop()
        seen += 1
        if current is None:
            continue
        exporter = getattr(getattr(current, "_batch_processor", None), "_exporter", None)
        if exporter is not None:
            found.append(exporter)
        pending.extend(getattr(current, "_span_processors", None) or ())
        downstream = getattr(current, "downstream", None)
        if isinstance(downstream, tuple):
            pending.extend(downstream)
        pending.append(getattr(current, "_next", None))
    return found
