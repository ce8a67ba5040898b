"""Copies of field values that can be compared later, and per-key diffs between them.

A method may change a field without assigning it (``self.items.append(x)``), so the
fields that hold containers are copied when the method starts and compared when it ends.
The copy ("frozen" value) keeps containers as private container types (so they are never
confused with the user's own values) and every other value as the object itself.

Two leaves are "the same" when they are the same object, or equal builtin scalars. User
objects are compared by identity only: their ``__eq__`` may raise, be slow, or have side
effects, and the program never asked us to call it. Work is bounded: containers deeper than
``max_depth`` or with more than ``max_items`` elements in all are kept as a :class:`Sized`
marker (compared by identity and length only), and a diff stops after ``max_entries``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from procscope.core.saferepr import (
    MASK,
    MIN_SECRET_LEN,
    is_secret_key,
    register_key_cache,
    safe_repr,
    scrub_text,
)

from ._semconv import ABSENT

# Leaves compared by value: immutable builtins whose __eq__ is cheap and cannot fail.
SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})
# Containers copied and diffed per key or index.
CONTAINERS = frozenset({dict, list, set, deque})

VALUE_LIMIT = 256  # characters of one recorded repr


class FDict(dict):  # type: ignore[type-arg]
    """A frozen dict (or dataclass, with ``typename`` set)."""

    __slots__ = ("typename",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.typename: str | None = None


class FList(list):  # type: ignore[type-arg]
    """A frozen list or deque."""

    __slots__ = ()


class FSet(frozenset):  # type: ignore[type-arg]
    """A frozen set."""

    __slots__ = ()


DIFFABLE = frozenset({FDict, FList, FSet})


class Sized:
    """A container too big or too deep to copy: compared by identity and length only."""

    __slots__ = ("length", "obj")

    def __init__(self, obj: Any, length: int) -> None:
        self.obj = obj
        self.length = length

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sized) and other.obj is self.obj and other.length == self.length

    __hash__ = None  # type: ignore[assignment]


def is_container(value: Any) -> bool:
    """True for a value whose inside is copied and diffed."""
    cls = type(value)
    if cls in CONTAINERS:
        return True
    return "__dataclass_fields__" in getattr(cls, "__dict__", ()) and not isinstance(value, type)


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def freeze(value: Any, max_depth: int, max_items: int) -> Any:
    """A copy of ``value`` that later changes inside it cannot reach."""
    return _freeze(value, max_depth, _Budget(max_items))


def _freeze(value: Any, depth: int, budget: _Budget) -> Any:
    cls = type(value)
    if cls in SCALARS:
        return value
    if cls is dict or cls is list or cls is deque or cls is set:
        size = len(value)
        if depth <= 0 or size > budget.left:
            return Sized(value, size)
        budget.left -= size
        if cls is set:
            return FSet(value)
        if cls is dict:
            items = value.copy()
            out = FDict(items)
            # Only values that are containers need a deeper copy; the set of their types
            # is computed in C, so a flat dict of scalars costs one copy.
            if not CONTAINER_TYPES.isdisjoint(map(type, items.values())) or _has_dataclass(
                items.values()
            ):
                for key, item in items.items():
                    if is_container(item):
                        out[key] = _freeze(item, depth - 1, budget)
            return out
        seq = FList(value)
        if not CONTAINER_TYPES.isdisjoint(map(type, seq)) or _has_dataclass(seq):
            for index, item in enumerate(seq):
                if is_container(item):
                    seq[index] = _freeze(item, depth - 1, budget)
        return seq
    if "__dataclass_fields__" in getattr(cls, "__dict__", ()):
        names = list(value.__dataclass_fields__)
        if depth <= 0 or len(names) > budget.left:
            return Sized(value, len(names))
        budget.left -= len(names)
        out = FDict()
        out.typename = cls.__qualname__
        for name in names:
            try:
                item = getattr(value, name)
            except Exception:  # noqa: BLE001 -- a field not set yet (field(init=False))
                continue
            out[name] = _freeze(item, depth - 1, budget) if is_container(item) else item
        return out
    return value


CONTAINER_TYPES = frozenset(CONTAINERS)


def _has_dataclass(values: Any) -> bool:
    for item in values:
        if "__dataclass_fields__" in getattr(type(item), "__dict__", ()):
            return True
    return False


def same(old: Any, new: Any) -> bool:
    """True when a frozen old value and a frozen new value are the same state."""
    if old is new:
        return True
    cls = type(old)
    if cls is not type(new):
        return False
    if cls in SCALARS:
        try:
            return bool(old == new)
        except Exception:  # noqa: BLE001 -- cannot happen for builtins; be safe anyway
            return False
    if cls is Sized:
        return bool(old == new)
    if cls is FDict:
        if getattr(old, "typename", None) != getattr(new, "typename", None):
            return False
        if len(old) != len(new) or old.keys() != new.keys():
            return False
        return all(same(old[k], new[k]) for k in old)
    if cls is FList:
        return len(old) == len(new) and all(same(a, b) for a, b in zip(old, new))
    if cls is FSet:
        try:
            return bool(old == new)
        except Exception:  # noqa: BLE001 -- an element's __eq__ raised
            return False
    return False  # distinct user objects: identity decides


def thaw(value: Any) -> Any:
    """A frozen value as plain builtins again, for its repr."""
    cls = type(value)
    if cls is FDict:
        plain = {k: thaw(v) for k, v in value.items()}
        typename = getattr(value, "typename", None)
        return _DataclassView(typename, plain) if typename else plain
    if cls is FList:
        return [thaw(v) for v in value]
    if cls is FSet:
        return set(value)
    if cls is Sized:
        return value.obj
    return value


class _DataclassView:
    """Prints like the dataclass it stands for, without calling its (user) __repr__."""

    __slots__ = ("fields", "typename")

    def __init__(self, typename: str, fields: dict[str, Any]) -> None:
        self.typename = typename
        self.fields = fields

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{k}={MASK if is_secret_key(k) else safe_repr(v, VALUE_LIMIT)}"
            for k, v in self.fields.items()
        )
        return f"{self.typename}({inner})"


_secret_names: dict[str, bool] = register_key_cache({})


def secret_name(name: str) -> bool:
    """is_secret_key, remembered: field names are few and asked about on every change."""
    known = _secret_names.get(name)
    if known is None:
        known = is_secret_key(name)
        if len(_secret_names) < 10_000:
            _secret_names[name] = known
    return known


# Builtin scalars whose plain repr() equals safe_repr's (short, cannot fail).
_PLAIN_REPR = frozenset({bool, float, type(None)})
# Ints of 13 digits or more may be card numbers, strings of SHORT_STR characters or more
# may hold a credential: those go through safe_repr (or scrub_text), which checks them.
_BIG = 10**12
_NEG_BIG = -_BIG  # made once (a big int negated is a new object each time)
SHORT_STR = MIN_SECRET_LEN - 2  # a repr adds two quotes


def value_repr(frozen: Any, field: str | None = None) -> str:
    """The recorded repr of a frozen value (masked under a secret-looking name)."""
    if frozen is MISSING:
        return ABSENT
    if frozen is MASKED or (field is not None and secret_name(field)):
        return MASK
    cls = type(frozen)
    # Fast paths, equal to what safe_repr gives: most state is small numbers and strings.
    if cls in _PLAIN_REPR or (cls is int and _NEG_BIG < frozen < _BIG):
        return repr(frozen)
    if cls is str and len(frozen) <= 150:
        return str_repr(frozen)
    return safe_repr(thaw(frozen), VALUE_LIMIT)


def scalar_repr(value: Any) -> str:
    """value_repr of a builtin scalar (one of SCALARS) under a name that is no secret."""
    cls = type(value)
    if cls in _PLAIN_REPR or (cls is int and _NEG_BIG < value < _BIG):
        return repr(value)
    if cls is str and len(value) <= 150:
        return str_repr(value)
    return safe_repr(value, VALUE_LIMIT)


# The scrubbed reprs of the strings met lately: state strings repeat (a few labels, a few
# statuses), and scrub_text's checks cost several times the repr. Emptied when full, and
# when the scrubbing rules change.
_str_reprs: dict[str, str] = register_key_cache({})
_str_reprs_get = _str_reprs.get


def str_repr(value: str) -> str:
    """scrub_text(repr(value)) of a str of at most 150 characters, remembered."""
    text = _str_reprs_get(value)
    if text is None:
        text = scrub_text(repr(value))
        if len(_str_reprs) >= 4096:
            _str_reprs.clear()
        _str_reprs[value] = text
    return text


def diff(
    path: str,
    old: Any,
    new: Any,
    out: list[tuple[str, Any, Any]],
    max_entries: int,
    secret: bool = False,
) -> int:
    """Append ``(path, old, new)`` for each difference (frozen values); returns omitted count.

    Containers of the same kind are diffed per key, index or element; anything else is
    one entry. ``old``/``new`` in entries are frozen values or ABSENT-marking ``_ABSENT``.
    """
    if same(old, new):
        return 0
    if secret:
        return _add(out, max_entries, path, MASKED, MASKED)
    cls = type(old)
    if cls is type(new):
        if cls is FDict and getattr(old, "typename", None) == getattr(new, "typename", None):
            omitted = 0
            dataclass_view = getattr(old, "typename", None) is not None
            for key in old:
                sub = f"{path}.{key}" if dataclass_view else f"{path}[{safe_repr(key, 60)}]"
                # A key added or removed is checked as a changed one is: its value is
                # recorded as masked under a secret-looking key (str or bytes).
                secret = is_secret_key(key)
                if key not in new:
                    omitted += _add(out, max_entries, sub, MASKED if secret else old[key], MISSING)
                else:
                    omitted += diff(sub, old[key], new[key], out, max_entries, secret)
            for key in new:
                if key not in old:
                    sub = f"{path}.{key}" if dataclass_view else f"{path}[{safe_repr(key, 60)}]"
                    secret = is_secret_key(key)
                    omitted += _add(out, max_entries, sub, MISSING, MASKED if secret else new[key])
            return omitted
        if cls is FList:
            omitted = 0
            common = min(len(old), len(new))
            for index in range(common):
                omitted += diff(f"{path}[{index}]", old[index], new[index], out, max_entries)
            for index in range(common, len(old)):
                omitted += _add(out, max_entries, f"{path}[{index}]", old[index], MISSING)
            for index in range(common, len(new)):
                omitted += _add(out, max_entries, f"{path}[{index}]", MISSING, new[index])
            return omitted
        if cls is FSet:
            omitted = 0
            try:
                removed = old - new
                added = new - old
            except Exception:  # noqa: BLE001 -- an element's __eq__/__hash__ raised
                return _add(out, max_entries, path, old, new)
            for element in removed:
                sub = f"{path}{{{safe_repr(element, 60)}}}"
                omitted += _add(out, max_entries, sub, element, MISSING)
            for element in added:
                sub = f"{path}{{{safe_repr(element, 60)}}}"
                omitted += _add(out, max_entries, sub, MISSING, element)
            return omitted
    return _add(out, max_entries, path, old, new)


class _Missing:
    """Stands for "no such field or key"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return ABSENT


MISSING: Any = _Missing()


class _Masked:
    """Stands for a value under a secret-looking key: recorded as changed, never shown."""

    __slots__ = ()

    def __repr__(self) -> str:
        return MASK


MASKED: Any = _Masked()


def _add(out: list[tuple[str, Any, Any]], max_entries: int, path: str, old: Any, new: Any) -> int:
    if len(out) >= max_entries:
        return 1
    out.append((path, old, new))
    return 0
