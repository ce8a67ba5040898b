"""TraceDBSpanExporter: finished spans into the SQLite trace DB.

It runs behind the SDK's BatchSpanProcessor (``export`` on its worker thread; ``shutdown``
and ``force_flush`` on the program's thread), so everything here is guarded by one lock.
It never raises into the program: a DB that is locked for longer than the busy timeout,
read-only, on a full disk, or not a procscope DB makes ``export`` return FAILURE with one
warning per kind of failure, and the next batch tries again (except for files that must
never be written: a foreign file or a newer schema, after which it stops trying).

Fork safety: a SQLite connection must never be used in a child made by ``fork()``. The
writer remembers its pid; a child sees another pid, abandons the inherited writer WITHOUT
closing it (closing could checkpoint or unlink the parent's WAL files) and opens its own
connection lazily on its first export. ``os.register_at_fork`` also replaces the lock in
the child, since another thread of the parent may have held it at the fork.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from procscope.core import losses
from procscope.core.guard import log_internal_error, warn_once
from procscope.core.settings import (
    ENV_DB,
    ENV_DB_MAX_AGE,
    ENV_DB_MAX_BYTES,
    BadSettingError,
    default_db,
    parse_byte_count,
    parse_positive_float,
    resolve_one,
)
from procscope.core.threadinfo import current_process_name

from . import _relay, _ship
from ._backlog import BacklogMixin, backlog_or_rows
from ._convert import numbered_batch, origins_to_batch, spans_to_batch
from ._fds import on_read_only_fs as _on_read_only_fs
from ._schema import TraceDBError
from ._staging import StagingMixin
from ._writer import Batch, Writer, file_identity, without_stored_spans

DEFAULT_BUSY_TIMEOUT_S = 5.0
# How many times a batch is written when the DB stays locked for a whole busy timeout
# (several processes writing big batches at once) before it is counted lost.
LOCKED_ATTEMPTS = 6

# Writers inherited from a parent process, or whose descriptors the program closed: kept
# referenced forever so that garbage collection never closes them (see module docstring).
_ABANDONED: list[Writer] = []


def _set_aside(writer: Writer) -> None:
    """Keep ``writer``'s connection open and referenced for good (never used again)."""
    writer.set_aside = True
    _ABANDONED.append(writer)


_SCALAR = (str, int, float)


FALLBACKS = 9


def fallback_paths(path: str) -> list[str]:
    """``path``, then the files written instead of it: procscope.db -> procscope.1.db..."""
    stem, ext = os.path.splitext(path)
    return [path, *(f"{stem}.{n}{ext}" for n in range(1, FALLBACKS + 1))]


def parse_path(value: object) -> str:
    """A DB path, made absolute. Unlike setup()'s check, a path that cannot be written
    is accepted: export then fails with a warning, instead of silently writing elsewhere."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise BadSettingError("expected a file path")
    return os.path.abspath(os.path.expanduser(os.fspath(value)))


# How long set-up may wait to open a DB that another process holds locked (see _open_now).
OPEN_AT_SETUP_SECONDS = 0.2


class TraceDBSpanExporter(StagingMixin, BacklogMixin, SpanExporter):
    """Exports finished spans to procscope's SQLite trace DB.

    ``path``: the DB file (default ``$PROCSCOPE_DB`` or ``./procscope.db``, made absolute).
    ``timeout``: seconds to wait for another writer's lock before a batch fails (5).
    ``max_bytes`` / ``max_age`` (``PROCSCOPE_DB_MAX_BYTES`` / ``PROCSCOPE_DB_MAX_AGE``, in
    bytes and seconds): optional retention limits; whole traces are pruned oldest first.
    """

    #: Spans per export that procscope's pipeline asks its batch processor for: each
    #: export is one transaction, and at the SDK's 512 its commit cost about a third of
    #: the write (docs/performance.md).
    preferred_batch_size = 4096

    @property
    def longest_export_s(self) -> float:
        """The longest one export can take when the DB is locked by other writers (each
        attempt waits one busy timeout), plus a margin for the write itself: procscope's
        batch processor does not take a slower export for a stalled exporter."""
        return self.timeout * LOCKED_ATTEMPTS + 5.0

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = None,
        max_bytes: int | float | str | None = None,
        max_age: float | str | None = None,
    ) -> None:
        self.path: str = resolve_one("path", ENV_DB, path, parse_path, default_db())
        self.timeout: float = resolve_one(
            "timeout",
            "PROCSCOPE_DB_TIMEOUT",
            timeout,
            parse_positive_float,
            DEFAULT_BUSY_TIMEOUT_S,
        )
        self.max_bytes: int | None = resolve_one(
            "max_bytes", ENV_DB_MAX_BYTES, max_bytes, parse_byte_count, None
        )
        self.max_age: float | None = resolve_one(
            "max_age", ENV_DB_MAX_AGE, max_age, parse_positive_float, None
        )
        self._lock = threading.Lock()
        self._owner: int | None = None  # thread id of the export holding the lock
        self._writer: Writer | None = None
        self._stopped = False  # shut down, or the file must never be written
        # Children hand their batches to the process that owns the DB (see _relay.py):
        # this exporter either sends to an owner's relay, or is the owner and runs one.
        self._relay_to: bytes | None = None
        self._relay: _relay.RelayServer | None = None
        # (pid, totals) of this process's losses as last stored (see _losses_to_write).
        self._losses_written: tuple[int, dict[str, int]] = (0, {})
        self._start_relay()
        self._register_fork_handler()
        losses.add_reporter(self._report_losses_now)
        if self._relay_to is None:
            self._open_now()

    def _open_now(self) -> None:
        """Open the DB at set-up, not at the first export: SQLite's three descriptors
        then come before the program's, as the relay's socket does. Opened later, they
        would land among the program's and leave holes where it expects consecutive free
        numbers (CPython's test_closerange skips then). A failure here is left to the
        first export, which reports it once.

        Set-up waits at most OPEN_AT_SETUP_SECONDS for a DB another process holds locked
        (creating or migrating it needs the write lock): the program must not wait on
        the DB to start; the first export, on the export thread, waits its full timeout.
        """
        try:
            self._writer = writer = self._open_writer(min(self.timeout, OPEN_AT_SETUP_SECONDS))
            writer.conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        except (TraceDBError, sqlite3.Error, OSError):
            self._writer = None
        except Exception:  # noqa: BLE001 -- set-up must not fail because of the DB
            log_internal_error()

    def _start_relay(self) -> None:
        try:
            if not _relay.relay_wanted():
                return
            self._relay_to = _relay.inherited_address(self.path)
            if self._relay_to is not None:
                return  # a child: its owner writes
            relay = _relay.RelayServer(self.path, weakref.WeakMethod(self._write_relayed_all))
            self._relay = relay
            relay.publish()
            # An exporter dropped without shutdown() still lets its relay go.
            weakref.finalize(self, relay.close, 1.0)
        except Exception:  # noqa: BLE001 -- without a relay, every process writes itself
            log_internal_error()

    # ------------------------------------------------------------------ fork safety

    def _register_fork_handler(self) -> None:
        # A weak reference: the handler cannot be unregistered, and must not keep a
        # shut-down exporter alive for the rest of the process.
        ref = weakref.ref(self)

        def after_fork_in_child() -> None:
            exporter = ref()
            if exporter is not None:
                exporter._after_fork_in_child()

        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._owner = None
        relay, self._relay = self._relay, None
        if relay is not None:
            # The parent owns the DB: send to it, and let go of its socket here (so that
            # the address dies with the parent, and a send then fails over to SQLite).
            self._relay_to = relay.address
            relay.close()
        if self._writer is not None:
            _set_aside(self._writer)
            self._writer = None

    def _writer_here(self) -> Writer:
        """This process's writer, opened on first use (and again after a fork)."""
        writer = self._writer
        if writer is not None and writer.pid != os.getpid():
            _set_aside(writer)  # inherited over a fork we did not see
            writer = self._writer = None
        if writer is not None and not writer.fds_intact():
            # The program closed our descriptors and may have reused their numbers:
            # closing the connection would close the program's files, and writing would
            # write into them. Keep the connection object alive (never closed, never
            # used) and open the DB again.
            _set_aside(writer)
            writer = self._writer = None
        if writer is not None and file_identity(writer.path) != writer.identity:
            # The file was deleted or replaced (rm procscope.db, log rotation): writing on
            # would go to an unlinked file nobody can read. Open (and check) the new one.
            self._drop_writer()
            writer = None
        if writer is None:
            writer = self._writer = self._open_writer()
        return writer

    def _open_writer(self, busy_timeout_s: float | None = None) -> Writer:
        """A writer for the DB, or, when that file must not be written (others may write
        it, or it is damaged), for the first usable ``<name>.N<ext>`` beside it (N = 1..9:
        every process of the program picks the same one), with one warning."""
        refused: TraceDBError | None = None
        for candidate in fallback_paths(self.path):
            try:
                writer = Writer(
                    candidate,
                    busy_timeout_s=self.timeout if busy_timeout_s is None else busy_timeout_s,
                    max_bytes=self.max_bytes,
                    max_age_s=self.max_age,
                )
            except TraceDBError as exc:
                if not exc.elsewhere:
                    raise
                refused = refused or exc
                continue
            if refused is not None:
                warn_once(
                    f"tracedb-elsewhere:{self.path}",
                    "procscope: not writing to the trace DB %s: %s; writing to %s instead "
                    "(read it with --db %s; reported once)",
                    self.path,
                    refused.reason,
                    candidate,
                    candidate,
                )
            return writer
        assert refused is not None
        raise TraceDBError(
            self.path, f"{refused.reason}, and no file beside it could be used instead"
        )

    # ------------------------------------------------------------------ SpanExporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._export(spans, None)

    def export_from(
        self, spans: Sequence[ReadableSpan], pid: int, process_name: str
    ) -> SpanExportResult:
        """Export spans that another process of the program made (``pid``, its
        multiprocessing name): the hand-off of an exit that ran out of time
        (procscope.core.handoff). Stored under that process, as its own export would."""
        return self._export(spans, (pid, process_name))

    def _export(
        self, spans: Sequence[ReadableSpan], origin: tuple[int, str] | None
    ) -> SpanExportResult:
        if not spans and not self._stopped:
            return SpanExportResult.SUCCESS
        return self._under_lock(len(spans), lambda: self._export_locked(spans, origin))

    def write_records(self, items: Sequence[tuple[Any, Any]], later: bool = True) -> bool:
        """Store plain spans straight from the recorder's drain (its record sink, see
        procscope.core.recorder): ``items`` are (plain span, (resource, scope)) pairs, in
        the order recorded. One transaction; a batch that cannot be stored is counted
        lost as an export's is. A large batch is stored for later (_backlog.py) unless
        ``later`` is False. True when stored. Never raises."""
        if not items:
            return True
        count = len(items)

        def make(writer: Any, pid: int, name: str) -> Batch:
            return origins_to_batch(items, writer, pid, name)

        def ship(pid: int, name: str, loss_rows: list[Any]) -> str:
            # From a child, the plain spans go to the owner, which makes the rows (_ship.py).
            address = self._relay_to
            assert address is not None
            return _ship.deliver(address, self.path, items, pid, name, loss_rows,
                                 self.timeout + 1.0)  # fmt: skip

        # A burst: stored now, made into rows when the program is idle (_backlog.py).
        chosen = backlog_or_rows(items, make) if later and self.backlog_wanted(count) else make
        done = self._under_lock(
            count, lambda: self._store_locked(chosen, count, ship=ship, direct=make))
        return done == SpanExportResult.SUCCESS

    def write_plains(self, plains: Sequence[tuple[Any, ...]], origin: tuple[Any, Any]) -> bool:
        """Store many plain spans of one (resource, scope) ``origin`` in one transaction:
        a flight recorder dump (``procscope.core._flight_spans``), its rows made under the
        write lock (_convert.numbered_batch). From a child that sends to the DB owner, as
        :meth:`write_records` does. True when stored. Never raises."""
        if not plains:
            return True
        if self._relay_to is not None:
            # (A recording's spans are what is read first after a death: made into rows
            # now, never put in the backlog.)
            return self.write_records([(plain, origin) for plain in plains], later=False)
        count = len(plains)
        resource, scope = origin

        def make(writer: Any, pid: int, name: str) -> Batch:
            return numbered_batch(plains, writer, pid, name, resource, scope)

        def write_here(pid: int, name: str, loss_rows: list[Any]) -> str:
            # (Never sent to the owner's relay, whatever happens meanwhile: a batch this
            # large does not fit one datagram, and a child writes those itself.)
            return _relay.NOT_SENT

        done = self._under_lock(count, lambda: self._store_locked(make, count, ship=write_here))
        return done == SpanExportResult.SUCCESS

    def _under_lock(self, count: int, work: Any) -> SpanExportResult:
        """``work()`` holding the exporter's lock; ``count`` spans lost when it cannot."""
        if self._stopped:
            self._lost(count)
            return SpanExportResult.FAILURE
        me = threading.get_ident()
        if self._owner == me:
            # Re-entered from the thread that is exporting: a signal handler (say, one
            # flushing at SIGTERM) interrupted our own export. Waiting for our own lock
            # would hang the process; these spans are dropped instead (and counted).
            self._lost(count)
            return SpanExportResult.FAILURE
        lock = self._lock
        # Bounded: another thread's batch holds the lock at most for one export.
        if not lock.acquire(timeout=self.longest_export_s):
            self._warn("another export of this process did not finish in time", count,
                       stopping=False)  # fmt: skip
            self._lost(count)
            return SpanExportResult.FAILURE
        try:
            self._owner = me
            if self._stopped:
                self._lost(count)
                return SpanExportResult.FAILURE
            return work()  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 -- the guard: never into the batch processor
            log_internal_error()
            self._lost(count)
            return SpanExportResult.FAILURE
        finally:
            self._owner = None
            lock.release()

    def _lost(self, count: int) -> None:
        """``count`` spans this process will never store; its totals are also left in
        the program's spool directory, for the top process to store (losses.spool):
        a process whose writes fail may have no later batch to carry them."""
        losses.count_lost(count, losses.EXPORT_FAILED)
        try:
            losses.spool(current_process_name())
        except Exception:  # noqa: BLE001 -- the losses are still counted (and warned of)
            log_internal_error()

    def _losses_to_write(self, pid: int, name: str) -> tuple[dict[str, int], list[Any]]:
        """This process's loss totals, and their rows when they changed since last
        stored (none otherwise: nearly always, a dict copy per batch)."""
        totals = losses.lost_by_reason()
        if not totals or self._losses_written == (pid, totals):
            return totals, []
        key_pid, start_ns = losses.process_key()
        now = time.time_ns()
        rows = [(key_pid, start_ns, reason, count, now, name) for reason, count in totals.items()]
        return totals, rows

    def _export_locked(
        self, spans: Sequence[ReadableSpan], origin: tuple[int, str] | None = None
    ) -> SpanExportResult:
        return self._store_locked(
            lambda writer, pid, name: spans_to_batch(spans, writer, pid, name), len(spans),
            origin,
        )

    def _store_locked(
        self, make: Any, count: int, origin: tuple[int, str] | None = None, ship: Any = None,
        direct: Any = None,
    ) -> SpanExportResult:
        """Store the batch ``make(writer, pid, process name)`` gives (``count`` spans):
        sent to the DB owner from a child (by ``ship(pid, name, loss rows)`` when given:
        a relay outcome), else written here (the lock held). ``direct``: what makes the
        batch's rows now, when it must be checked against the spans stored already (no
        backlog then)."""
        me = os.getpid()
        my_name = current_process_name()
        # The spans' process: this one, or the one that handed them off.
        pid, name = origin if origin is not None else (me, my_name)
        totals, loss_rows = self._losses_to_write(me, my_name)
        outcome = _relay.NOT_SENT
        if self._relay_to is not None:
            if ship is None:
                outcome = self._send_to_owner(make, pid, name, loss_rows)
            else:
                outcome = ship(pid, name, loss_rows)
                if outcome in (_relay.GONE, _relay.UNCONFIRMED_GONE):
                    self._relay_to = None  # the owner has ended: from now on, write here
            if outcome == _relay.STORED:
                self._losses_written = (me, totals)
                return SpanExportResult.SUCCESS
        # Sent but not confirmed: the owner may have stored it before it died.
        # And a hand-off may hold the batch its process was sending when its exit flush
        # ran out of time, which may have been stored too.
        skip_stored = (
            outcome in (_relay.UNCONFIRMED, _relay.UNCONFIRMED_GONE) or origin is not None
        )
        if skip_stored and direct is not None:
            make = direct

        def build(writer: Writer) -> Batch:
            batch: Batch = make(writer, pid, name)
            batch.losses = loss_rows
            return batch

        result = self._write_locked(build, count, skip_stored=skip_stored)
        if result == SpanExportResult.SUCCESS:
            self._losses_written = (me, totals)
        return result

    def _report_losses_now(self) -> None:
        """Send this process's loss totals to the DB owner without waiting (no lock, no
        SQLite): called when a child's exit flush gave spans up, while its own export
        may still hold the lock. The owner of the DB stores them with its next
        relayed batch or at its exit; a process that writes the DB itself has them
        written with its next batch or at shutdown."""
        address = self._relay_to
        if address is None or self._stopped:
            return
        pid = os.getpid()
        _, rows = self._losses_to_write(pid, current_process_name())
        if not rows:
            return
        batch = Batch()
        batch.losses = rows
        _relay.send(address, _relay.encode(self.path, batch, _relay.LocalIds()))

    def _send_to_owner(self, make: Any, pid: int, name: str, loss_rows: list[Any]) -> str:
        """Hand the batch to the owner's relay and wait until it is stored (see
        _relay.py); anything but STORED means this process writes it instead."""
        address = self._relay_to
        if address is None:
            return _relay.NOT_SENT
        ids = _relay.LocalIds()
        batch = make(ids, pid, name)
        batch.losses = loss_rows
        outcome = _relay.deliver(
            address,
            lambda ack: _relay.encode(self.path, batch, ids, ack),
            wait_s=self.timeout + 1.0,
        )
        if outcome in (_relay.GONE, _relay.UNCONFIRMED_GONE):
            self._relay_to = None  # the owner has ended: from now on, write here
        return outcome

    def _write_relayed(self, message: dict[str, Any]) -> bool:
        """A batch a child sent; True once stored (see :meth:`_write_relayed_all`)."""
        return self._write_relayed_all([message])

    def _write_relayed_all(self, messages: list[dict[str, Any]]) -> bool:
        """Batches children sent (on the relay thread of the owner), in one transaction;
        True once stored. Not stored, each child writes its own: nothing here is lost."""
        count = sum(len(message.get("spans") or ()) for message in messages)
        # Bounded as export() is: another batch holds the lock at most one busy timeout.
        if not self._lock.acquire(timeout=self.timeout + 5.0):
            return False
        try:
            if self._stopped:
                return False

            def build(writer: Writer) -> Batch:
                batches = []
                for message in messages:
                    batch = _relay.build_batch(message, writer)
                    # Under the write lock: past its deadline the child writes the batch
                    # itself (with the same check), or has died. Either way, the spans the
                    # DB does not hold yet are stored once, by whichever writes first.
                    if _relay.expired(message):
                        batch = without_stored_spans(writer.conn, batch)
                    batches.append(batch)
                return _relay.merged(batches)

            outcome = self._write_locked(build, count, quiet=True)
            return outcome == SpanExportResult.SUCCESS
        finally:
            self._lock.release()

    def _write_locked(
        self, build: Any, count: int, *, skip_stored: bool = False, quiet: bool = False
    ) -> SpanExportResult:
        """Write one batch; ``quiet`` for a relayed batch, whose sender keeps it and
        writes it itself when this fails (no 'batch lost' warning)."""
        try:
            writer = self._writer_here()
            for attempt in range(LOCKED_ATTEMPTS):
                try:
                    writer.write(Batch(), build=lambda: build(writer), skip_stored=skip_stored)
                    return SpanExportResult.SUCCESS
                except sqlite3.OperationalError as exc:
                    # Other processes held the write lock for a whole busy timeout: many
                    # busy writers, not a fault. Tried again, a few times, rather than lose
                    # the batch; a relayed batch (quiet) is not retried: its sender is
                    # waiting, and writes it itself.
                    if quiet or attempt == LOCKED_ATTEMPTS - 1 or "locked" not in str(exc):
                        raise
            raise AssertionError("not reached")  # pragma: no cover
        except TraceDBError as exc:
            if exc.permanent:
                self._stopped = True
            self._warn(exc.reason, count, stopping=exc.permanent)
        except (sqlite3.Error, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            if _on_read_only_fs(self.path):
                reason = f"it is on a read-only file system ({reason})"
            if self._writer is not None and isinstance(exc, sqlite3.DatabaseError):
                if "not a database" in reason or "malformed" in reason:
                    # The file was replaced or damaged under us: reopen (and re-check)
                    # on the next batch rather than write into whatever it is now.
                    self._drop_writer()
            if not quiet:
                self._warn(reason, count, stopping=False)
        if not quiet:
            # A relayed batch (quiet) is not lost: its sender writes it itself.
            self._lost(count)
        return SpanExportResult.FAILURE

    def _warn(self, reason: str, count: int, *, stopping: bool) -> None:
        then = (
            "nothing more will be written there"
            if stopping
            else "this batch is lost, later batches will try again"
        )
        warn_once(
            f"tracedb-export:{self.path}:{reason}",
            "procscope: cannot write spans to the trace DB %s: %s; %s "
            "(the program carries on; reported once)",
            self.path,
            reason,
            then,
        )

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer.pid != os.getpid():
            _set_aside(writer)  # a parent's: collecting it would close it here
        elif writer is not None:
            try:
                writer.close()
            except sqlite3.Error:
                pass

    def shutdown(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            # First: what children sent is written before the connection closes.
            relay.close(timeout=self.timeout + 1.0)
        self.index_at_end()
        # Bounded: the lock is held at most for one batch, itself bounded by the busy
        # timeout; a shutdown that cannot get it in that time leaves the connection to
        # the process's exit rather than hang the program.
        if self._owner == threading.get_ident():
            self._stopped = True  # called from inside our own export (a signal handler)
            return
        acquired = self._lock.acquire(timeout=self.timeout + 1.0)
        try:
            if acquired and not self._stopped:
                self._store_last_losses()
            self._stopped = True
            if acquired:
                self._drop_writer()
        finally:
            if acquired:
                self._lock.release()

    def _store_last_losses(self) -> None:
        """At shutdown (the lock held): losses counted since the last batch (the last
        spans dropped, a batch that failed) are stored in a batch of their own."""
        pid = os.getpid()
        _, rows = self._losses_to_write(pid, current_process_name())
        if rows:
            try:
                self._export_locked(())
            except Exception:  # noqa: BLE001 -- shutdown goes on whatever happens here
                log_internal_error()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # Every export is committed before it returns: nothing is buffered here.
        return True

    def __repr__(self) -> str:
        return f"TraceDBSpanExporter(path={self.path!r})"
