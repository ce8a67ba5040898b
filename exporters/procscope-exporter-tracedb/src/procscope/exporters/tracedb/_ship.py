"""Children ship plain spans to the DB owner, which makes the rows and writes them.

A child process under procscope's own pipeline, with the trace DB as its only consumer,
gets its records from the recorder as plain spans (``procscope.core.recorded``'s ``P_*``
tuples: ints, strings, tuples and dicts). When a batch of them fits one relay datagram
(``_relay.MAX_DATAGRAM``: a short-lived child's spans, the tail of a longer one's), the
child ships the plain spans themselves to the process that owns the DB (see _relay.py):
no rows made, no JSON, no SQLite opened in the child. The owner's relay thread makes the
rows, under the CHILD's resource and scope (their row keys are sent with the batch), and
writes them.

A bigger batch (a full drain of 4,096 spans is about 1 MB) is written by the child
itself, as before. Shipping those too (through a spool file) was measured slower: on the
issue's round trip the owner is the busiest process of the program (its own records,
under its one GIL), and its relay thread made the children's 40,000 rows one batch at a
time while every child waited for its acknowledgement (exits of 3.5-4.4 s against
2.6-3.0 s with children writing their own big batches).

The wire (version 3 of the relay's): ``MAGIC`` then a ``marshal`` dump (never a pickle:
marshal loads data, it runs nothing) of ``(path, pid, process name, groups, loss rows,
ack)``, ``groups`` being ``[resource key, scope key, plain spans]`` in the order recorded.
The relay's guarantees hold unchanged: same user only (``SCM_CREDENTIALS``), same DB path,
a batch counts as stored only when the owner says so, and the child keeps it meanwhile;
when the owner is gone, its queue is full, it cannot store the batch or does not answer
in time, the child writes the batch to SQLite itself (leaving out spans the owner stored
before it failed): nothing is silently lost, nothing stored twice.
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from typing import Any

from . import _relay
from ._convert import plain_to_batch
from ._writer import Batch, Writer

MAGIC = b"PSP3"  # a plain batch; the relay's JSON batches start with "{"
# A plain span takes 150-400 bytes: more than this many never fit one datagram.
MAX_SPANS = 2048


def _resource_key(resource: Any) -> tuple[Any, ...] | None:
    return None if resource is None else tuple(Writer.resource_key(resource))


def _scope_key(scope: Any) -> tuple[Any, ...] | None:
    return None if scope is None else tuple(Writer.scope_key(scope))


class _Keys:
    """Row keys of this process's resources and scopes, made once per object (the
    record kinds of one tracer share them)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Any, Any]] = {}

    def of(self, item: Any, make: Any) -> Any:
        found = self._cache.get(id(item))
        if found is not None and found[0] is item:
            return found[1]
        key = make(item)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[id(item)] = (item, key)
        return key


_keys = _Keys()


def groups_of(items: Sequence[tuple[Any, Any]]) -> list[tuple[Any, Any, list[Any]]]:
    """(resource key, scope key, plain spans) for each run of one origin in ``items``
    (the recorder sink's (plain span, (resource, scope)) pairs)."""
    groups: list[tuple[Any, Any, list[Any]]] = []
    last: Any = None
    plains: list[Any] = []
    for plain, origin in items:
        if origin is not last and (
            last is None or origin[0] is not last[0] or origin[1] is not last[1]
        ):
            resource, scope = origin
            plains = []
            groups.append((_keys.of(resource, _resource_key), _keys.of(scope, _scope_key), plains))
            last = origin
        plains.append(plain)
    return groups


def encode(body: tuple[Any, ...]) -> bytes:
    return MAGIC + marshal.dumps(body)


def deliver(
    address: bytes,
    path: str,
    items: Sequence[tuple[Any, Any]],
    pid: int,
    process_name: str,
    loss_rows: list[Any],
    wait_s: float,
) -> str:
    """Ship the plain spans ``items`` to the owner at ``address`` and wait until stored:
    one of the relay's outcomes (see :func:`_relay.deliver`). Anything but STORED leaves
    the batch to the caller: NOT_SENT when it does not fit one datagram."""
    if len(items) > MAX_SPANS:
        return _relay.NOT_SENT  # surely too big for one datagram: not worth encoding
    body = (path, pid, process_name, groups_of(items), loss_rows)
    try:
        payload = encode(body)
    except ValueError:  # a value marshal cannot take: the caller writes the batch
        return _relay.NOT_SENT
    if len(payload) > _relay.MAX_DATAGRAM:
        return _relay.NOT_SENT  # the caller writes it
    return _relay.deliver(address, lambda ack: encode((*body, ack)), wait_s)


# --- the owner's side ----------------------------------------------------------------------


def decode(payload: bytes, path: str) -> dict[str, Any] | None:
    """A child's plain batch for the DB at ``path``, as the relay's message dict; None
    for anything else (not ours, another form or DB: ignored, never written)."""
    try:
        sent_path, pid, process_name, groups, loss_rows, ack = marshal.loads(payload[len(MAGIC) :])
    except (ValueError, TypeError, EOFError):
        return None
    if sent_path != path or not isinstance(pid, int) or not isinstance(groups, list):
        return None
    return {"v": _relay.WIRE_VERSION, "plain": groups, "pid": pid, "name": str(process_name),
            "losses": loss_rows, "ack": ack}  # fmt: skip


def build_batch(message: dict[str, Any], writer: Writer) -> Batch:
    """The rows of a child's plain batch, under its resources and scopes (looked up or
    added in this DB: called under the write lock)."""
    groups = message["plain"]
    ids = _KeyIds(writer)
    batch = Batch()
    pid, name = message["pid"], message["name"]
    for resource_key, scope_key, plains in groups:
        plain_to_batch(plains, ids, pid, name, resource_key, scope_key, batch)  # type: ignore[arg-type]
    batch.losses = _relay.loss_rows(message.get("losses"))
    return batch


class _KeyIds:
    """The writer's ids, looked up by row key (what a child sends) instead of object."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def resource_id(self, key: Any) -> int | None:
        return None if key is None else self._writer.resource_id_of(*key)

    def scope_id(self, key: Any) -> int | None:
        return None if key is None else self._writer.scope_id_of(*key)
