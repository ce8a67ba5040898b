"""Child processes hand their spans to the process that writes the trace DB.

A short-lived child (a ``fork`` or ``forkserver`` worker, a pool task's process) exports
a handful of spans once, just before it exits, and the parent waits for that exit. Opening
SQLite there costs more than everything else procscope does in the child: a connection,
the WAL index, one write transaction, about 0.7-2 ms in a freshly forked process, where
every page touched is copied. So the process that owns the DB (the one whose exporter was
made first, normally the program at the top) listens on a Unix datagram socket, and its
children send each batch there as one datagram. The owner's relay thread writes the
batches with its own connection.

Nothing is ever lost for the relay's sake, and nothing foreign gets in:

* a batch counts as exported only when the owner says it is stored: the child sends it
  with a token and the address of its own socket, the owner commits it and answers
  (one datagram back), and the child waits for that answer (about a commit's time,
  well under the cost of opening SQLite). The child keeps the batch meanwhile: if the
  owner dies (its socket is gone: ``ECONNREFUSED`` on a probe), answers that it could
  not store it, or does not answer within the busy timeout plus a second, the child
  writes the batch to SQLite itself, leaving out the spans the owner stored before it
  died (:func:`_writer.without_stored_spans`). Past the child's deadline (checked under
  the write lock) the owner too stores only the spans the DB does not hold yet: the
  child is writing them, or has died (its exit flush ran out of time), and whichever
  writes first stores them, once;
* the child sends without blocking; if the owner is gone (``ECONNREFUSED``), its queue is
  full (``EAGAIN``), the batch is too big for one datagram, or anything else fails, the
  child writes that batch to SQLite itself, as it always could;
* the owner's shutdown first shuts the socket for reading, so that a send after that point
  fails (and the child writes itself), then writes what was already queued;
* only datagrams sent by processes of the same user (``SCM_CREDENTIALS``, checked by the
  kernel) for the same DB path are written; they are JSON rows, or plain spans in
  ``marshal`` form (_ship.py: the recorder's records, made into rows by the owner), never
  pickles.

Linux only (abstract socket addresses, ``SO_PASSCRED``); elsewhere every process writes
for itself. ``PROCSCOPE_DB_RELAY=0`` turns it off.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from procscope.core.guard import log_internal_error
from procscope.core.settings import parse_bool, resolve_one
from procscope.core.threadinfo import registered_thread

from ._writer import Batch, Writer

ENV_RELAY = "PROCSCOPE_DB_RELAY"
# Where children find the owner's relay: {"path": the DB, "address": the socket}.
ENV_RELAY_ADDRESS = "_PROCSCOPE_DB_RELAY_ADDRESS"
WIRE_VERSION = 2  # 2: batches carry an acknowledgement request
# One datagram per batch, at most this big; a bigger batch is written by the child itself.
MAX_DATAGRAM = 192 * 1024
# At most this many queued batches written in one transaction by the owner.
COALESCE_MAX = 64
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_AVAILABLE = sys.platform.startswith("linux") and hasattr(socket, "SO_PASSCRED")


def relay_wanted() -> bool:
    if not _AVAILABLE:
        return False
    return bool(resolve_one("relay", ENV_RELAY, None, parse_bool, True))


def inherited_address(path: str) -> bytes | None:
    """The relay of the process that owns ``path``, as this process's parent said."""
    raw = os.environ.get(ENV_RELAY_ADDRESS)
    if not raw:
        return None
    try:
        found = json.loads(raw)
        if found.get("path") != path or found.get("owner") == os.getpid():
            return None
        return bytes.fromhex(found["address"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# --- the child's side ----------------------------------------------------------------------


class LocalIds:
    """Stands in for :class:`Writer` while a child builds a batch: resources and scopes
    get indexes into lists sent with the batch, for the owner to look up in the DB."""

    def __init__(self) -> None:
        self.resources: list[list[Any]] = []
        self.scopes: list[list[Any]] = []
        self._keys: dict[int, int] = {}

    def resource_id(self, resource: Any) -> int | None:
        return self._index(resource, self.resources, Writer.resource_key)

    def scope_id(self, scope: Any) -> int | None:
        return self._index(scope, self.scopes, Writer.scope_key)

    def _index(self, item: Any, table: list[list[Any]], key: Any) -> int | None:
        """The item's index in ``table``, added (as its ``key``) on first sight."""
        if item is None:
            return None
        index = self._keys.get(id(item))
        if index is None:
            index = self._keys[id(item)] = len(table)
            table.append(list(key(item)))
        return index


def encode(path: str, batch: Batch, ids: LocalIds, ack: dict[str, Any] | None = None) -> bytes:
    spans = [[*row[:1], row[1].hex(), *row[2:]] for row in batch.spans]
    links = [[row[0], row[1].hex(), *row[2:]] for row in batch.links]
    message = {
        "v": WIRE_VERSION,
        "path": path,
        "resources": ids.resources,
        "scopes": ids.scopes,
        "spans": spans,
        "events": batch.events,
        "links": links,
        "span_attrs": batch.span_attrs,
        "event_attrs": batch.event_attrs,
    }
    if batch.losses:
        message["losses"] = batch.losses
    if ack is not None:
        message["ack"] = ack
    return json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")


SENT = "sent"
NOT_SENT = "not sent"  # this batch only: too big, the owner's queue full...
GONE = "gone"  # the owner has ended, or stopped reading: no use trying again
_GONE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EPIPE, errno.ENOENT})


def _sendto(address: bytes, payload: bytes) -> int:
    """Send one datagram without ever blocking: 0, or the errno of the failure."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(payload, address)
        return 0
    except OSError as exc:
        return exc.errno or -1


def send(address: bytes, payload: bytes) -> str:
    """One datagram to the owner, without ever blocking."""
    if len(payload) > MAX_DATAGRAM:
        return NOT_SENT
    failure = _sendto(address, payload)
    if not failure:
        return SENT
    return GONE if failure in _GONE_ERRNOS else NOT_SENT


STORED = "stored"  # the owner committed the batch
ANSWER_SIZE = 256
# How often a waiting child checks that the owner still has its socket.
_PROBE_INTERVAL_S = 0.25
_PROBE = b"?"  # not JSON: the owner's relay ignores it


def deliver(address: bytes, message: Any, wait_s: float) -> str:
    """Send ``message(ack)`` (the encoded batch) and wait for the owner to store it:
    STORED; NOT_SENT or GONE (it never reached the owner); UNCONFIRMED or
    UNCONFIRMED_GONE (sent, not confirmed: the caller writes it, skipping stored spans).

    The socket that hears the answer lives for this call only: a process holds no
    extra descriptor between batches (nor passes one on to its own children)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        token = f"{os.getpid()}-{os.urandom(8).hex()}"
        sock.bind(f"\0procscope-db-ack-{token}".encode())
        deadline = time.monotonic() + wait_s
        reply = sock.getsockname().hex()
        outcome = send(address, message({"token": token, "reply": reply, "until": deadline}))
        if outcome != SENT:
            return outcome
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return UNCONFIRMED
            sock.settimeout(min(left, _PROBE_INTERVAL_S))
            try:
                data = sock.recv(ANSWER_SIZE)
            except TimeoutError:
                if _refused(address):
                    return UNCONFIRMED_GONE
                continue
            except OSError:
                return UNCONFIRMED
            stored = _answer_to(data, token)
            if stored is not None:
                return STORED if stored else UNCONFIRMED


UNCONFIRMED = "unconfirmed"  # sent, maybe stored: the child writes what is not stored
UNCONFIRMED_GONE = "unconfirmed, owner gone"


def _refused(address: bytes) -> bool:
    """True when nobody holds the owner's address any more (it died or closed it); a
    socket shut for reading (EPIPE) still belongs to an owner writing what it queued."""
    return _sendto(address, _PROBE) in (errno.ECONNREFUSED, errno.ENOENT)


def _answer_to(data: bytes, token: str) -> bool | None:
    """The owner's answer (stored or not) if ``data`` answers ``token``, else None."""
    try:
        answer = json.loads(data)
        if isinstance(answer, dict) and answer.get("token") == token:
            return bool(answer.get("stored"))
    except ValueError:
        pass
    return None


def answer(sock: socket.socket, ack: Any, stored: bool) -> None:
    """Tell the child whether its batch is stored (never blocking; a lost answer costs
    the child its wait, then it writes the batch itself, skipping stored spans)."""
    if not isinstance(ack, dict):
        return
    try:
        reply = bytes.fromhex(str(ack.get("reply")))
        payload = json.dumps({"token": ack.get("token"), "stored": stored}).encode()
        sock.sendto(payload, reply)
    except (OSError, ValueError, TypeError):
        pass


def expired(message: dict[str, Any]) -> bool:
    """True once the sending child has stopped waiting: it writes the batch itself (or
    has died), so the owner stores only the spans the DB does not hold yet."""
    ack = message.get("ack")
    until = ack.get("until") if isinstance(ack, dict) else None
    return isinstance(until, (int, float)) and time.monotonic() > until


# --- the owner's side ----------------------------------------------------------------------


_MESSAGE_LISTS = ("resources", "scopes", "spans", "events", "links", "span_attrs", "event_attrs")


def decode(payload: bytes, path: str) -> dict[str, Any] | None:
    """A child's batch for the DB at ``path``; None for anything else (not ours, not
    JSON, another version or DB: ignored, never written)."""
    try:
        message = json.loads(payload)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(message, dict) or message.get("v") != WIRE_VERSION:
        return None
    if message.get("path") != path:
        return None
    if not all(isinstance(message.get(key), list) for key in _MESSAGE_LISTS):
        return None
    return message


def build_batch(message: dict[str, Any], writer: Writer) -> Batch:
    """The batch a child sent, with its resources and scopes looked up in this DB (under
    the write lock: called by :meth:`Writer.write`)."""
    if "plain" in message:
        from . import _ship  # imports this module

        return _ship.build_batch(message, writer)
    rids = [
        writer.resource_id_of(attributes, schema_url)
        for attributes, schema_url in message["resources"]
    ]
    sids = [writer.scope_id_of(*key) for key in message["scopes"]]
    batch = Batch()
    for row in message["spans"]:
        rid = rids[row[11]] if row[11] is not None else None
        sid = sids[row[12]] if row[12] is not None else None
        batch.spans.append((row[0], bytes.fromhex(row[1]), *row[2:11], rid, sid, *row[13:]))
    batch.events = [tuple(row) for row in message["events"]]
    batch.links = [(row[0], bytes.fromhex(row[1]), *row[2:]) for row in message["links"]]
    batch.span_attrs = [tuple(row) for row in message["span_attrs"]]
    batch.event_attrs = [tuple(row) for row in message["event_attrs"]]
    batch.losses = loss_rows(message.get("losses"))
    return batch


def merged(batches: Sequence[Batch]) -> Batch:
    """One batch of several queued together (row ids renumbered: each batch's are
    relative to itself)."""
    if len(batches) == 1:
        return batches[0]
    out = Batch()
    span_base = event_base = 0
    for batch in batches:
        out.spans += [(row[0] + span_base, *row[1:]) for row in batch.spans]
        out.events += [(e[0] + event_base, e[1] + span_base, *e[2:]) for e in batch.events]
        out.links += [(row[0] + span_base, *row[1:]) for row in batch.links]
        out.span_attrs += [(k, v, pk + span_base) for k, v, pk in batch.span_attrs]
        out.event_attrs += [(k, v, pk + event_base) for k, v, pk in batch.event_attrs]
        out.losses += batch.losses
        # Relative ids may have gaps (spans left out as stored already): past the largest.
        span_base += max((row[0] for row in batch.spans), default=-1) + 1
        event_base += max((e[0] for e in batch.events), default=-1) + 1
    return out


def loss_rows(rows: Any) -> list[tuple[Any, ...]]:
    """A child's loss totals (see _schema.LOSS_UPSERT), rows of another shape left out."""
    if not isinstance(rows, list):
        return []
    kept = []
    for row in rows:
        if (
            isinstance(row, list)
            and len(row) == 6
            and all(isinstance(value, int) for value in (row[0], row[1], row[3], row[4]))
            and isinstance(row[2], str)
            and (row[5] is None or isinstance(row[5], str))
        ):
            kept.append(tuple(row))
    return kept


class RelayServer:
    """The owner's socket, and the thread that writes what children send.

    ``write`` (a weak method of the exporter) is called on the relay thread with the
    decoded messages that were queued together (one transaction). The thread holds the
    server; the server holds the exporter weakly, so that an exporter dropped without
    ``shutdown()`` is still collected (its finalizer closes the relay)."""

    def __init__(self, path: str, write: Any) -> None:
        self.path = path
        self._write = write
        self.pid = os.getpid()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # An abstract address: no file to clean up, gone with the last handle on it.
            name = b"\0procscope-db-relay-%d-%s" % (os.getpid(), os.urandom(6).hex().encode())
            self._sock.bind(name)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except OSError:
            self._sock.close()
            raise
        self.address: bytes = self._sock.getsockname()
        self._closed = False
        self._gone = False  # set before the socket closes: nothing is written after it
        self._thread = threading.Thread(target=self._serve, name="procscope-db-relay", daemon=True)
        self._thread.start()

    def publish(self) -> None:
        """Tell this process's future children (any start method) where the relay is."""
        os.environ[ENV_RELAY_ADDRESS] = json.dumps(
            {"path": self.path, "address": self.address.hex(), "owner": self.pid}
        )

    def _serve(self) -> None:
        sock = self._sock
        space = socket.CMSG_SPACE(_CREDENTIALS.size)
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(MAX_DATAGRAM, space)
            except OSError:
                return  # closed under us
            if not data:
                return  # shut for reading (close()), and every queued datagram written
            received, ended = self._queued_behind(data, ancillary, space)
            write = self._write()
            if write is None:
                return  # the exporter is gone
            messages = []
            stored = False
            try:
                for data, ancillary in received:
                    message = (
                        _decode_any(data, self.path) if _sent_by_this_user(ancillary) else None
                    )
                    if message is not None:
                        messages.append(message)
                if messages and not self._gone:
                    stored = bool(write(messages))
            except Exception:  # noqa: BLE001 -- one bad datagram must not stop the relay
                log_internal_error()
            del write
            for message in messages:
                answer(sock, message.get("ack"), stored)
            if ended:
                return

    def _queued_behind(
        self, data: bytes, ancillary: Any, space: int
    ) -> tuple[list[tuple[bytes, Any]], bool]:
        """This datagram and those already queued behind it (several children sending
        at once), to be written in one transaction: for a batch of 64 spans the commit
        cost more than its rows. Never waits for more. True: the socket was shut."""
        received = [(data, ancillary)]
        while len(received) < COALESCE_MAX:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(MAX_DATAGRAM, space, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return received, False
            except OSError:
                return received, True
            if not data:
                return received, True
            received.append((data, ancillary))
        return received, False

    def close(self, timeout: float = 5.0) -> None:
        """Refuse further sends (children then write for themselves), let the thread
        write what is queued (within ``timeout``), and let go of the socket. Safe to call
        twice, and from a forked child, where it only lets go of the inherited handle."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self.pid:
            try:
                # From here a child's send fails (EPIPE) and the child writes itself; a
                # blocking receive still returns what was queued, then b"".
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            if self._thread is not registered_thread():
                self._thread.join(timeout)
            raw = os.environ.get(ENV_RELAY_ADDRESS, "")
            if self.address.hex() in raw:
                os.environ.pop(ENV_RELAY_ADDRESS, None)
        # Children waiting on a batch still queued see the address go and write it
        # themselves; the thread must not write it after that (see _serve).
        self._gone = True
        try:
            self._sock.close()
        except OSError:
            pass


def _decode_any(data: bytes, path: str) -> dict[str, Any] | None:
    """A child's batch of either form: rows as JSON, or plain spans (_ship.py)."""
    from . import _ship  # imports this module

    if data.startswith(_ship.MAGIC):
        return _ship.decode(data, path)
    return decode(data, path)


def _sent_by_this_user(ancillary: list[tuple[int, int, bytes]]) -> bool:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            _, uid, _ = _CREDENTIALS.unpack(data[: _CREDENTIALS.size])
            return uid == os.getuid()
    return False
