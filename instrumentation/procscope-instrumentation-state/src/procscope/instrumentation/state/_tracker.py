"""One tracker per traced object: its name, its change counter, and how it records.

Trackers live in a process-wide registry keyed by ``id(obj)``, never on the object: an
attribute of ours in ``__dict__`` would show in ``vars()``, equality of ``__dict__``,
pickles and copies. The entry is removed when the object dies (a weakref callback, or for
``__slots__`` objects without ``__weakref__`` a ``__del__`` hook on the class), before its
id can be reused.

Concurrency: each change takes its sequence number from the tracker's ``itertools.count``
(atomic under the GIL) at the moment of the assignment, and every event carries those
numbers per field. Two threads whose methods overlap may end in either order; readers
replay fields by sequence number, not by event time, so the last assignment wins as it
did in the object. The lock only serialises the snapshot bookkeeping of one object.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
import weakref
from typing import Any

from procscope.core import flight as _flight
from procscope.core import shared_state
from procscope.core.forksafe import ForkSafeLock, held_in_forked_child
from procscope.core.naming import get_name

from . import _semconv as sc
from ._diff import (
    _BIG,
    _NEG_BIG,
    _PLAIN_REPR,
    DIFFABLE,
    MISSING,
    SCALARS,
    SHORT_STR,
    diff,
    freeze,
    is_container,
    same,
    scalar_repr,
    secret_name,
    value_repr,
)
from ._runtime import MAX_CHANGE_ENTRIES, RT, Target, begin, current_span

_live = shared_state.settings()  # the live settings object: read its attributes per call

# id(obj) -> Tracker. Plain dict operations are atomic under the GIL.
TRACKERS: dict[int, Tracker] = {}

_NAME_ATTR = "_procscope_name"  # where procscope.name() keeps a name: not state
_dict_of = object.__getattribute__  # never the class's own __getattribute__
# procscope.name()'s weak map (one per process), for objects that take no attributes.
_NAMED_ELSEWHERE: Any = shared_state.get().names

# Kinds of attribute, cached per concrete class by name.
SKIP, IN_DICT, IN_SLOT = 0, 1, 2

_counters: dict[str, itertools.count[int]] = {}
# Taken by trace_state(), also in a fork child before our at-fork hook has run.
_counters_lock = ForkSafeLock()


def default_name(prefix: str) -> str:
    """``Prefix#n``: n counts the objects traced under that prefix in this process."""
    with _counters_lock:
        counter = _counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}#{next(counter)}"


def class_name(cls: type) -> str:
    module = getattr(cls, "__module__", None) or ""
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    return qualname if module in ("", "builtins", "__main__") else f"{module}.{qualname}"


# ---------------------------------------------------------------------------- fields


# class -> name -> kind. Classes are few and long-lived; a class's attributes are assumed
# not to change from plain to property after its instances are traced.
KINDS: dict[type, dict[str, tuple[int, Any]]] = {}


def attribute_kind(cls: type, name: str) -> tuple[int, Any]:
    """Where ``name`` lives on instances of ``cls``: SKIP, IN_DICT or (IN_SLOT, descriptor)."""
    per_class = KINDS.get(cls)
    if per_class is None:
        per_class = KINDS.setdefault(cls, {})
    kind = per_class.get(name)
    if kind is None:
        kind = _find_kind(cls, name)
        per_class[name] = kind
    return kind


class _SlotProbe:
    __slots__ = ("probe",)


_member_descriptor = type(_SlotProbe.__dict__["probe"])


def _find_kind(cls: type, name: str) -> tuple[int, Any]:
    if name == _NAME_ATTR or (name.startswith("__") and name.endswith("__")):
        return (SKIP, None)
    for klass in cls.__mro__:
        attr = klass.__dict__.get(name, MISSING)
        if attr is MISSING:
            continue
        if type(attr) is _member_descriptor:
            return (IN_SLOT, attr)
        attr_type = type(attr)
        if hasattr(attr_type, "__set__") or hasattr(attr_type, "__delete__"):
            return (SKIP, None)  # a property or other data descriptor: its storage is state
        break
    if cls.__dictoffset__ == 0:
        return (SKIP, None)  # no instance __dict__ (slots only): the name cannot be set
    return (IN_DICT, None)


def read_kind(obj: Any, name: str, kind: tuple[int, Any]) -> Any:
    """The value of a field, or MISSING."""
    if kind[0] == IN_DICT:
        try:
            return object.__getattribute__(obj, "__dict__").get(name, MISSING)
        except AttributeError:
            return MISSING
    if kind[0] == IN_SLOT:
        try:
            return kind[1].__get__(obj, type(obj))
        except AttributeError:
            return MISSING
    return MISSING


_slot_names_cache: dict[type, tuple[tuple[str, Any], ...]] = {}


def _slot_fields(cls: type) -> tuple[tuple[str, Any], ...]:
    cached = _slot_names_cache.get(cls)
    if cached is not None:
        return cached
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        for name, attr in klass.__dict__.items():
            if type(attr) is _member_descriptor and name not in found:
                found[name] = attr
    result = tuple(found.items())
    _slot_names_cache[cls] = result
    return result


def read_state(obj: Any, fields: frozenset[str] | None) -> dict[str, Any]:
    """Every field of ``obj`` (instance ``__dict__`` and slots), optionally filtered."""
    state: dict[str, Any] = {}
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        own = {}
    for name, value in list(own.items()):
        if isinstance(name, str) and name != _NAME_ATTR:
            state[name] = value
    for name, descriptor in _slot_fields(type(obj)):
        try:
            state[name] = descriptor.__get__(obj, type(obj))
        except AttributeError:
            continue  # an empty slot is not a field (yet)
    if fields is not None:
        state = {k: v for k, v in state.items() if k in fields}
    return state


# ---------------------------------------------------------------------------- tracker


class Tracker:
    """The recording side of one traced object."""

    __slots__ = (
        "__weakref__",
        "container_fields",
        "counter",
        "default_name",
        "epoch",
        "epoch_label",
        "fields",
        "generation",
        "given_name",
        "last_name",
        "last_repr",
        "lock",
        "pending_snapshot",
        "process_generation",
        "ref",
        "since_snapshot",
        "type_name",
    )

    def __init__(
        self, obj: Any, given_name: str | None, fields: frozenset[str] | None, prefix: str | None
    ) -> None:
        self.given_name = given_name
        self.fields = fields
        self.type_name = class_name(type(obj))
        self.default_name = given_name or default_name(prefix or type(obj).__qualname__)
        self.last_name: str | None = None
        # (field, value, repr) of the last small scalar recorded as a new value (see
        # _scalars.record_frame): the next change of that field starts from it.
        self.last_repr: tuple[str, Any, str] | None = None
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.process_generation = _process_generation  # (see lock_of)
        self.since_snapshot = 0
        self.epoch = 0  # snapshots recorded so far
        self.epoch_label = ""  # f"{last_name}/{epoch}", made once per snapshot
        self.generation = -1  # no snapshot recorded yet
        self.pending_snapshot: str | None = "start"
        self.container_fields: tuple[str, ...] = ()
        self.ref: Any = None

    def name_of(self, obj: Any) -> str:
        """The given name, else the one procscope.name() gave, else ``Class#n``."""
        if self.given_name is not None:
            return self.given_name
        # procscope.name() keeps the name in the object's __dict__ when it has one (read
        # here directly: get_name() would also size the process-wide weak map, a Python
        # call, on every recorded change); objects without a __dict__ ask get_name().
        try:
            name = _dict_of(obj, "__dict__").get(_NAME_ATTR)
        except Exception:  # noqa: BLE001 -- no __dict__, or a hostile one
            name = None
        if type(name) is str:
            return name
        if _NAMED_ELSEWHERE.data:  # objects named that take no attributes: rare
            return get_name(obj) or self.default_name
        return self.default_name

    def note_containers(self, state: dict[str, Any]) -> None:
        self.container_fields = tuple(
            k for k, v in state.items() if type(v) not in SCALARS and is_container(v)
        )

    def update_containers(self, changed: dict[str, Any]) -> None:
        """Keep the list of container fields right after fields were (re)assigned."""
        known = self.container_fields
        if not known and not any(map(is_container, changed.values())):
            return  # the common case: scalars replaced by scalars
        current = set(known)
        for name, value in changed.items():
            if value is not MISSING and is_container(value):
                current.add(name)
            else:
                current.discard(name)
        if current != set(self.container_fields):
            self.container_fields = tuple(current)


def _after_fork_in_child() -> None:
    """A forked child starts with copies of its parent's traced objects.

    Their locks may have been held by a thread that does not exist here, and the child's
    history of each object starts with a snapshot of its own (reason ``fork``) at its
    first recorded change, under the same name but the child's pid. Both are done per
    object when the child first takes its lock (:func:`lock_of`), not here: renewing
    every tracker at the fork cost each fork child about 0.9 us per traced object
    (50,000 objects: 43 ms), copy-on-write faults for the most part.
    """
    global _trackers_pid, _process_generation, _renewing
    if _trackers_pid == os.getpid():
        return  # done already, by lock_of() in an earlier at-fork hook
    _trackers_pid = os.getpid()
    _renewing = threading.Lock()
    _process_generation += 1
    # Every tracker is then out of date, as after configure(): its next recorded change
    # is followed by a snapshot (whose reason _renew makes "fork").
    RT.generation += 1


_trackers_pid = os.getpid()  # the process whose threads the trackers' locks belong to
# Bumped in each fork child: a tracker of an older generation holds its parent's lock.
_process_generation = 0
_renewing = threading.Lock()  # (new in each fork child)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def lock_of(tracker: Tracker) -> Any:
    """``tracker.lock``, made new first in a fork child (see _after_fork_in_child).

    Fork safety must not depend on the order of the at-fork hooks: a program's hook
    registered before procscope was imported runs before ours, and a traced object it
    changes takes this lock. A ``locked()`` check, and a getpid only when taken.
    """
    if held_in_forked_child(tracker.lock, _trackers_pid):
        _after_fork_in_child()
    if tracker.process_generation != _process_generation:
        _renew(tracker)
    return tracker.lock


def _renew(tracker: Tracker) -> None:
    """In a fork child, at the first use of a tracker copied from the parent: a new lock,
    and a snapshot of the child's own owed at its next recorded change."""
    with _renewing:  # (two threads of the child must not both renew it)
        if tracker.process_generation != _process_generation:
            tracker.lock = threading.Lock()
            tracker.pending_snapshot = "fork"
            tracker.process_generation = _process_generation


def register(obj: Any, tracker: Tracker) -> Tracker:
    """Register ``tracker`` for ``obj`` (or return the one another thread registered)."""
    key = id(obj)
    existing = TRACKERS.setdefault(key, tracker)
    if existing is not tracker:
        return existing
    try:
        tracker.ref = weakref.ref(obj, functools.partial(_forget, key, tracker))
    except TypeError:
        tracker.ref = None  # no weakrefs: the class's __del__ hook forgets it
    return tracker


def _forget(key: int, tracker: Tracker, _ref: Any = None) -> None:
    if TRACKERS.get(key) is tracker:
        TRACKERS.pop(key, None)


# ---------------------------------------------------------------------------- recording


def span_attributes(tracker: Tracker, name: str, method: str) -> dict[str, Any]:
    return {
        sc.OBJECT: name,
        sc.CLASS: tracker.type_name,
        sc.CODE_FUNCTION: f"{tracker.type_name}.{method}",
    }


def begin_target(
    tracker: Tracker, obj: Any, name: str, method: str, start_ns: int
) -> Target | None:
    """A target for this object's events; the span's name and attributes only if needed."""
    return begin(
        lambda: (f"{type(obj).__qualname__}.{method}", span_attributes(tracker, name, method)),
        start_ns,
    )


def record_start(tracker: Tracker, obj: Any, method: str, start_ns: int | None = None) -> None:
    """The snapshot taken when tracing of an object starts (or later, if unsampled then)."""
    if not RT.active:
        return
    name = tracker.name_of(obj)
    target = begin_target(tracker, obj, name, method, start_ns or time.time_ns())
    if target is None:
        return  # not sampled: pending_snapshot stays set, the next recorded change sends it
    try:
        with lock_of(tracker):
            _snapshot(tracker, obj, name, target, tracker.pending_snapshot or "start")
    finally:
        target.end()


def _snapshot(tracker: Tracker, obj: Any, name: str, target: Any, reason: str) -> None:
    """Emit a snapshot event (caller holds tracker.lock)."""
    state = read_state(obj, tracker.fields)
    tracker.note_containers(state)
    seq = next(tracker.counter)
    if name != tracker.last_name:
        tracker.epoch = 0  # snapshot numbers count per name: a renamed object starts anew
    tracker.epoch += 1
    attributes: dict[str, Any] = {
        sc.OBJECT: name,
        sc.CLASS: tracker.type_name,
        sc.EPOCH: f"{name}/{tracker.epoch}",
        sc.SEQ: seq,
        sc.SNAPSHOT_REASON: reason,
        sc.FIELDS: tuple(state),
    }
    if shared_state.settings().capture_content:
        max_depth, max_items = RT.max_depth, RT.max_items
        values = []
        for k, v in state.items():
            cls = type(v)
            if cls in SCALARS and not secret_name(k):
                # value_repr of a scalar (its own frozen copy), its fast cases inlined.
                if (
                    (cls is int and _NEG_BIG < v < _BIG)
                    or cls in _PLAIN_REPR
                    or (cls is str and len(v) < SHORT_STR)
                ):
                    values.append(f"{v!r}")
                else:
                    values.append(scalar_repr(v))
            else:
                values.append(value_repr(freeze(v, max_depth, max_items), k))
        attributes[sc.VALUES] = tuple(values)
    target.add(sc.EVENT_SNAPSHOT, attributes)
    tracker.since_snapshot = 0
    tracker.generation = RT.generation
    tracker.pending_snapshot = None
    tracker.last_name = name
    tracker.epoch_label = f"{name}/{tracker.epoch}"


def change_attributes(
    tracker: Any, name: str, method: str, fields: list[str], seqs: list[int]
) -> dict[str, Any]:
    """The attributes every change event carries, whatever path records it."""
    return {
        sc.OBJECT: name,
        sc.CLASS: tracker.type_name,
        sc.METHOD: method,
        # Before the first snapshot under this name (a rename), the changes are epoch 0.
        sc.EPOCH: tracker.epoch_label if name == tracker.last_name else f"{name}/0",
        sc.SEQ: max(seqs),
        sc.FIELDS: tuple(fields),
        sc.FIELD_SEQS: tuple(seqs),
    }


def record_changes(
    tracker: Tracker,
    obj: Any,
    method: str,
    start_ns: int,
    assigned: dict[str, list[Any]] | None,
    frozen: dict[str, Any] | None,
) -> None:
    """Record what one method call (or one outside assignment) changed, if anything.

    ``assigned``: field -> [old value, new value, seq] from the setattr/delattr hooks;
    ``frozen``: field -> frozen value at the start, for fields that held containers.
    Runs on every call that assigned something: plain loops, no comprehensions (each
    of those is a function call in Python 3.11).
    """
    max_depth, max_items = RT.max_depth, RT.max_items
    changed: list[tuple[str, Any, Any, int]] = []  # field, old frozen, new frozen, seq
    containers_moved = False
    if assigned:
        for field, entry in assigned.items():
            old, new, seq = entry
            if frozen is not None and field in frozen:
                old_frozen = frozen[field]
            else:
                old_frozen = old if type(old) in SCALARS else freeze(old, max_depth, max_items)
            if type(new) in SCALARS:
                new_frozen = new
            else:
                new_frozen = freeze(new, max_depth, max_items)
                containers_moved = True
            if not same(old_frozen, new_frozen):
                changed.append((field, old_frozen, new_frozen, seq))
        if containers_moved or tracker.container_fields:
            tracker.update_containers({field: entry[1] for field, entry in assigned.items()})
    if frozen:
        for field, old_frozen in frozen.items():
            if assigned and field in assigned:
                continue
            current = read_state_field(obj, field)
            new_frozen = freeze(current, max_depth, max_items)
            if not same(old_frozen, new_frozen):
                changed.append((field, old_frozen, new_frozen, next(tracker.counter)))
    if not changed:
        return
    name = tracker.name_of(obj)
    # The usual case first, without building the description of a span not needed.
    current = None if RT.log_events else current_span()
    if current is not None and current.is_recording():
        target: Target | None = Target(current, False)
    else:
        target = begin_target(tracker, obj, name, method, start_ns)
    if target is None:
        # Not sampled: the state moved on unseen; the next recorded change resynchronises.
        tracker.pending_snapshot = tracker.pending_snapshot or "resync"
        if _flight.append is not None:  # (the flight recorder keeps it: see _flight)
            from ._flight import note_changes

            note_changes(tracker, obj, method, changed)
        return
    try:
        _emit_change(tracker, obj, name, method, changed, target)
    finally:
        target.end()


def _emit_change(
    tracker: Tracker,
    obj: Any,
    name: str,
    method: str,
    changed: list[tuple[str, Any, Any, int]],
    target: Any,
) -> None:
    capture = _live.capture_content
    fields: list[str] = []
    seqs: list[int] = []
    olds: list[str] = []
    news: list[str] = []
    entries: list[tuple[str, Any, Any]] = []
    omitted = 0
    for field, old_frozen, new_frozen, seq in changed:
        fields.append(field)
        seqs.append(seq)
        if capture:
            olds.append(value_repr(old_frozen, field))
            news.append(value_repr(new_frozen, field))
        # Per-key detail only where a container changed inside (a scalar's old and new
        # values say it all already).
        if type(old_frozen) in DIFFABLE and type(new_frozen) is type(old_frozen):
            omitted += diff(
                field, old_frozen, new_frozen, entries, MAX_CHANGE_ENTRIES, secret_name(field)
            )
    attributes = change_attributes(tracker, name, method, fields, seqs)
    if capture:
        attributes[sc.OLD_VALUES] = tuple(olds)
        attributes[sc.VALUES] = tuple(news)
    if entries:
        paths, old_details, new_details = [], [], []
        for path, old, new in entries:
            paths.append(path)
            if capture:
                old_details.append(value_repr(old))
                new_details.append(value_repr(new))
        attributes[sc.CHANGE_PATHS] = tuple(paths)
        if capture:
            attributes[sc.CHANGE_OLD] = tuple(old_details)
            attributes[sc.CHANGE_NEW] = tuple(new_details)
    if omitted:
        attributes[sc.CHANGE_OMITTED] = omitted
    target.add(sc.EVENT_CHANGE, attributes)
    # Snapshot bookkeeping; the counter is approximate under races, which only moves
    # a periodic snapshot by a change or two.
    tracker.since_snapshot += len(changed)
    if snapshot_due(tracker, name):
        snapshot_after_change(tracker, obj, name, target)


def snapshot_due(tracker: Tracker, name: str) -> bool:
    """After a change: is a snapshot owed (asked for, every N changes, after a
    configure() or a rename)? The scalar fast path (_scalars) inlines this test."""
    return (
        tracker.pending_snapshot is not None
        or tracker.generation != RT.generation
        or name != tracker.last_name
        or tracker.since_snapshot >= RT.snapshot_every
    )


def snapshot_after_change(tracker: Tracker, obj: Any, name: str, target: Any) -> None:
    """The snapshot a change is followed by (pending, resync, renamed or periodic), if any."""
    if tracker.process_generation != _process_generation:
        _renew(tracker)  # (a fork child's first change of it: its reason is "fork")
    reason = tracker.pending_snapshot
    if tracker.generation != RT.generation:
        reason = reason or "resync"
    if name != tracker.last_name and tracker.last_name is not None:
        reason = reason or "renamed"
    if reason is None and tracker.since_snapshot >= RT.snapshot_every:
        reason = "periodic"
    if reason is not None:
        with lock_of(tracker):
            _snapshot(tracker, obj, name, target, reason)


def read_state_field(obj: Any, field: str) -> Any:
    return read_kind(obj, field, attribute_kind(type(obj), field))
