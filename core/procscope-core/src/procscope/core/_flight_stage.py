"""A flight recording staged: its records stored in the trace DB at once, spans after.

Making 100,000 records into spans and rows takes seconds; the process that dumps is
often about to end (a worker whose target raised, a child with half a second for its
exit). So when the trace DB is where the spans go, a dump first stores its records as
one compact row (``flight_staged``: :func:`encode`, ``marshal``, about a tenth of a
second for 100,000), then makes the spans, and removes the row once they are stored.

The spans' ids derive from the row's key and each record (:func:`span_id`), so the spans
made again from the row (:func:`revive`) are the same spans: a process that reaps a child
that died with a row left (it leaves a marker file in the hand-off directory,
:func:`left_by`), or the top process at its end for any process that is gone
(:func:`store_orphans`), stores what is missing, never a span twice.
"""

from __future__ import annotations

import marshal
import os
import random
import threading
from operator import itemgetter
from typing import Any

from . import flight, handoff
from .flight import F_A, F_B, F_CODE, F_THREAD, F_TIME

VERSION = 1
MESSAGE_LENGTH = 4  # (a message's record: time, code, thread ident, kept item)
_MASK = 0xFFFF_FFFF_FFFF_FFFF
_code_of = itemgetter(F_CODE)
_thread_of = itemgetter(F_THREAD)

# Dumps under way whose records are not staged yet: while there is one, a child's end
# keeps its mirror for its parent (_ending.end_mirror).
_waiting = [0]
_lock = threading.Lock()
# This process's staged recordings whose spans are not all stored yet: its marker file
# stays while there is one.
_staged: set[int] = set()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # (a thread of the parent may have held it)
    _waiting[0] = 0  # (the parent's dumps go on in the parent only)
    _staged.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def span_id(key: int, at: int, ident: int) -> int:
    """The id of the span a staged record makes: the same in every process and Python
    version (a mix of integers, not ``hash``, whose algorithm is the interpreter's),
    different for every record of a thread (two records of one thread never share a
    nanosecond)."""
    z = (key ^ (at * 0x9E3779B97F4A7C15) ^ (ident * 0xC2B2AE3D27D4EB4F)) & _MASK
    z = ((z ^ (z >> 31)) * 0xBF58476D1CE4E5B9) & _MASK
    return (z ^ (z >> 29)) or 1


def waiting() -> int:
    return _waiting[0]


def begin() -> None:
    with _lock:
        _waiting[0] += 1


def done_waiting() -> None:
    with _lock:
        _waiting[0] = max(0, _waiting[0] - 1)


def encode(job: Any) -> bytes:
    """The dump's records, what their sites and threads are, and its root's values:
    everything :func:`revive` needs, in a process that has none of the dump's objects."""
    from ._flight_spans import _ended_threads, see_records

    records = job.records
    own = job.pid == os.getpid()
    # What the kinds make of the records together (a message's put and get share an
    # id), made once: here, for the row and for the spans made next (Dump.seen).
    see_records(records)
    job.seen = True
    sites: dict[int, Any] = {}
    for code in set(map(_code_of, records)):
        kind = flight.SITES[code][0]
        if not (own and kind.sampled):  # (a sampled record's span exists: left out)
            sites[code] = (kind.name, kind.site_plain(code))
    rows: list[Any] = []
    append = rows.append
    kinds = flight.SITES
    for record in records:
        code = record[F_CODE]
        if code not in sites:
            continue
        kind = kinds[code][0]
        shared = kind.shared_id(record)
        data = record[F_A] if len(record) == MESSAGE_LENGTH else kind.plain(record)
        if data is None:
            continue
        if shared is None:
            append((record[F_TIME], code, record[F_THREAD], data))
        else:
            append((record[F_TIME], code, record[F_THREAD], data, shared))
    names = dict(job.thread_names or {})
    for ident, ends in _ended_threads(records).items():
        names.setdefault(ident, ends[-1][1])
    threads = {i: names.get(i) or (None, f"thread-{i}") for i in set(map(_thread_of, rows))}
    header = (VERSION, job.reason, job.trace_id, job.root_id, job.root, job.root_links(),
              job.overwritten, job.expired, job.window, job.pid, job.ended)
    return marshal.dumps((header, sites, threads, rows), 2)


def revive(body: bytes, key: int) -> Any:
    """The dump a staged row holds, its spans made as its own process would have; None
    when a kind of its records is unknown here."""
    from ._flight_mirror import _RECOVERED
    from ._flight_spans import Dump

    header, sites, threads, rows = marshal.loads(body)
    if any(kind_name not in flight.KINDS for kind_name, _site in sites.values()):
        return None  # (a kind this process has not imported: left for one that has)
    (_version, reason, trace_id, root_id, root, links, overwritten, expired, window, pid,
     ended) = header
    records = []
    plain, shared = _RECOVERED.code, _STAGED.code
    for row in rows:
        at, site_code, ident, data = row[:4]
        kind_name, site = sites[site_code]
        native, name = threads.get(ident) or (None, f"thread-{ident}")
        revived = (kind_name, site, at, native, name, data)
        if len(row) == 4:
            records.append((at, plain, ident, revived, None, None))
        else:
            records.append((at, shared, ident, revived, row[4], None))
    job = Dump(reason, trace_id, root_id, None, records, overwritten, expired, window,
               root=root, pid=pid, thread_names=threads)
    job.ended = ended
    job.links = tuple(links)
    job.staged_key = key
    return job


class _Shared(flight.FlightKind):
    """A staged record that shared something with another (``FlightKind.shared_id``):
    revived by its own kind, then given it back."""

    name = "staged"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        kind_name, site, at, _native, _name, data = record[F_A]
        kind = flight.KINDS.get(kind_name)
        made = None if kind is None else kind.revive(site, data, at)
        if made is not None and kind is not None:
            kind.share(made, record[F_B])
        return made


_STAGED = _Shared()


def stage(job: Any, exporter: Any, origin: tuple[Any, Any]) -> int | None:
    """Store ``job``'s records in the trace DB (``exporter.stage_flight``); its key, or
    None when they could not be (the dump goes on without)."""
    key = random.getrandbits(63) or 1
    body = encode(job)
    if not exporter.stage_flight(key, job.trace_id, job.reason, len(job.records), body,
                                 origin):
        return None
    job.staged_key = key
    with _lock:
        _staged.add(key)
    _mark(os.getpid(), True)
    return key


def unstaged(key: int) -> None:
    """The recording staged under ``key`` has its spans stored: the marker goes with
    this process's last one (two dumps a second apart may be staged at once)."""
    with _lock:
        _staged.discard(key)
        if _staged:
            return
    _mark(os.getpid(), False)


def _marker(pid: int) -> str | None:
    folder = handoff.directory() if pid != os.getpid() else handoff._private_directory()
    return os.path.join(folder, f"flight-{pid}.staged") if folder else None


def _mark(pid: int, present: bool) -> None:
    path = _marker(pid)
    if not path:
        return
    try:
        if present:
            with open(path, "wb"):
                pass
        else:
            os.unlink(path)
    except OSError:
        pass


def left_by(pid: int) -> bool:
    """Whether the child ``pid`` ended with a staged recording whose spans it had not
    all stored (its marker file is there)."""
    path = _marker(pid)
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]


def store_left(pid: int, exporter: Any) -> int:
    """Make the recordings the dead process ``pid`` staged into spans; how many."""
    done = 0
    try:
        for row in exporter.staged_rows(pid):
            job = revive(row[-1], row[0])
            if job is not None and exporter.store_staged(row, job.plains()):
                done += 1
    finally:
        _mark(pid, False)
    return done


def store_orphans() -> int:
    """At the top process's shutdown: the recordings staged by processes that have
    ended without storing their spans and that no parent finished (a child started by
    ``os.fork`` alone, say); how many."""
    from ._flight_mirror import staging_exporter

    exporter = staging_exporter()
    if exporter is None:
        return 0
    done = 0
    for pid in {row[1] for row in exporter.staged_rows()}:
        if pid != os.getpid() and not _alive(pid):
            done += store_left(pid, exporter)
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # (another user's process: alive)
    return True
