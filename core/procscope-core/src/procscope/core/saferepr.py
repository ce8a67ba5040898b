"""Reprs of user values that cannot fail, cannot grow without bound, and hide secrets.

Message bodies and object states are user data: their ``__repr__`` may raise, block,
build a huge text, or print a password. Everything recorded goes through
:func:`safe_repr`, which

- bounds the work by size before any text is made: ``str``/``bytes``/``bytearray`` are
  sliced first (a 100 MB message costs a few hundred bytes of repr), containers stop after
  a few items and a few levels, one call's text after TEXT_BUDGET characters, huge ints
  are described by their size;
- bounds it in time: a ``__repr__`` the program defined is never called (it may be slow,
  block, or raise). Such an object is shown by its fields (``Job(id=3, state='done')``,
  from ``__dict__``/``__slots__``, dataclass fields, namedtuple fields); only reprs known
  to be cheap run (builtins, ``object``'s own, and a few stdlib types such as
  ``datetime`` or ``Decimal``);
- masks by key: values under secret-looking keys or field names in every mapping
  (dict and subclasses, the standard library's mappings; the program's own by their
  fields), dataclass, namedtuple, object fields, and ``(key, value)`` pairs such as
  header lists;
- masks by value pattern (:func:`scrub_text`): credentials in URLs, ``Bearer``/``Basic``
  tokens, JWTs, cloud and service keys, private-key blocks, card numbers (Luhn), and
  ``key=value`` / ``'key': value`` text under a secret-looking key.

The masking rules live in :mod:`.scrubbing` (docs/scrubbing.md).
"""

from __future__ import annotations

import dataclasses
import reprlib
import threading
from array import array
from collections import deque
from collections.abc import Mapping
from itertools import islice
from types import MethodType
from typing import Any

from .scrubbing import (
    MASK,
    MIN_SECRET_LEN,
    SECRET_KEY,
    is_secret_key,
    register_key_cache,
    scrub_command,
    scrub_text,
    set_extra_rules,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MASK",
    "MIN_SECRET_LEN",
    "SECRET_KEY",
    "is_secret_key",
    "register_key_cache",
    "safe_repr",
    "scrub_command",
    "scrub_text",
    "set_extra_rules",
    "unrepresentable",
]

DEFAULT_LIMIT = 512
# The classes whose __repr__ is called: cheap, bounded, and calling no program code (by the
# module and name of the class that defines __repr__, so that no module is imported to
# check; the names as Python 3.10 to 3.13 report them). Others are shown by their fields.
# Not here on purpose: containers and views whose repr calls their items' reprs (list
# and dict subclasses, UserList, dict views, bound methods, partial, SimpleNamespace...).
_SAFE_REPRS = frozenset(
    {
        ("builtins", "object"), ("builtins", "type"), ("builtins", "function"),
        ("builtins", "builtin_function_or_method"), ("builtins", "module"),
        ("builtins", "range"), ("builtins", "memoryview"), ("builtins", "code"),
        ("builtins", "generator"), ("builtins", "coroutine"), ("builtins", "ellipsis"),
        ("builtins", "NotImplementedType"), ("builtins", "method-wrapper"),
        ("builtins", "wrapper_descriptor"), ("builtins", "method_descriptor"),
        ("builtins", "getset_descriptor"), ("builtins", "member_descriptor"),
        ("_thread", "lock"), ("_thread", "RLock"), ("threading", "Thread"),
        ("threading", "Condition"), ("threading", "Event"), ("threading", "Semaphore"),
        ("_io", "FileIO"), ("_io", "BufferedReader"), ("_io", "BufferedWriter"),
        ("_io", "TextIOWrapper"), ("socket", "socket"), ("weakref", "ReferenceType"),
        ("datetime", "date"), ("datetime", "datetime"), ("datetime", "time"),
        ("datetime", "timedelta"), ("datetime", "timezone"), ("zoneinfo", "ZoneInfo"),
        ("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID"),
        ("pathlib", "PurePath"), ("pathlib._local", "PurePath"),
        ("enum", "Enum"), ("enum", "Flag"), ("enum", "IntEnum"), ("enum", "IntFlag"),
        ("ipaddress", "_BaseAddress"), ("ipaddress", "_BaseNetwork"),
        ("re", "Pattern"), ("re", "Match"),
    }
)  # fmt: skip
# Array libraries: their objects are shown by shape and dtype, not their (huge) repr.
_ARRAY_MODULES = frozenset({"numpy", "pandas", "torch", "jax", "jaxlib", "cupy", "tensorflow"})
# Modules whose Mapping types are read through items() (cheap, no program code).
_MAPPING_MODULES = frozenset(
    {"builtins", "collections", "os", "weakref", "_collections_abc", "types", "http.cookies"}
)
_trusted_cache: dict[type, bool] = {}


def _module_of(cls: type) -> str:
    try:
        return str(cls.__module__)
    except Exception:  # noqa: BLE001 -- a hostile metaclass
        return ""


# The scrubbed reprs of short strings met lately (emptied when full or when the rules
# change), and the fields each dataclass shows.
_short_texts: dict[str, str] = {}
_short_texts_get = _short_texts.get
_dataclass_names: dict[type, tuple[str, ...]] = {}
_kinds: dict[type, str] = {}  # class -> "dataclass" or "instance" (see _repr_other)
_kinds_get = _kinds.get


def _remember_kind(cls: type, kind: str) -> None:
    if len(_kinds) < 1024:
        _kinds[cls] = kind


register_key_cache(_short_texts)
_DICT_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_object_repr = object.__repr__
_get = object.__getattribute__


def _trusted_repr(cls: type) -> bool:
    """Whether ``cls.__repr__`` is cheap and runs no program code."""
    known = _trusted_cache.get(cls)
    if known is None:
        known = False
        try:
            for base in cls.__mro__:
                if "__repr__" in base.__dict__:
                    module = str(base.__module__)
                    known = (
                        (module, str(base.__qualname__)) in _SAFE_REPRS
                        or base.__dict__["__repr__"] is _object_repr
                        or module.startswith("procscope.")  # our own views of user values
                    )
                    break
        except Exception:  # noqa: BLE001 -- a hostile metaclass: not trusted
            known = False
        if len(_trusted_cache) < 10_000:
            _trusted_cache[cls] = known
    return known


def _cut(text: str, size: int) -> str:
    if len(text) <= size:
        return text
    half = max(0, (size - 3) // 2)
    return text[:half] + "..." + text[len(text) - half :]


class _ScrubbingRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxdict = 16
        self.maxlist = 16
        self.maxtuple = 16
        self.maxset = 16
        self.maxfrozenset = 16
        self.maxdeque = 16
        self.maxarray = 16
        self.maxstring = 200
        self.maxlong = 60
        self.maxother = 200
        self._exact: dict[type, Any] = {
            str: self.repr_str,
            bytes: self._repr_bytes,
            bytearray: self._repr_bytes,
            int: self.repr_int,
            float: self._builtin,
            complex: self._builtin,
            bool: self._builtin,
            type(None): self._builtin,
            dict: self.repr_dict,
            list: self.repr_list,
            tuple: self.repr_tuple,
            set: self.repr_set,
            frozenset: self.repr_frozenset,
            deque: self.repr_deque,
            array: self.repr_array,
            MethodType: self._repr_method,
        }

    def repr1(self, x: Any, level: int) -> str:
        # The text made so far is counted against a budget (per thread, per safe_repr
        # call): past it, items are "...". Counts alone (16 items, 4 levels) would still
        # allow 16**4 strings of 200 characters, seconds of work for text that is cut.
        local = _budget
        if local.left <= 0:
            return "..."
        method = self._exact.get(type(x))
        text: str = method(x, level) if method is not None else self._repr_other(x, level)
        local.left -= len(text)
        return text

    # Scalars: sliced before any text is made.

    def _builtin(self, x: Any, level: int) -> str:
        return repr(x)

    def _sliced(self, x: Any, base: Any) -> str:
        """repr of a str, bytes or bytearray (or subclass), sliced first: the text made is
        bounded whatever the size (the base type's own methods, never a subclass's)."""
        size = self.maxstring
        length = base.__len__(x)
        as_text = str if base is str else bytes
        if length <= size:
            return scrub_text(repr(as_text(base.__getitem__(x, slice(None)))))
        # Head and tail, each scrubbed with some context beyond the cut, so that a secret
        # across it is found whole before it is cut.
        half = max(0, (size - 3) // 2)
        margin = 64
        head = repr(as_text(base.__getitem__(x, slice(0, half + margin))))
        tail = repr(as_text(base.__getitem__(x, slice(length - half - margin, length))))
        head, tail = scrub_text(head)[:half], scrub_text(tail)
        return head + "..." + tail[len(tail) - half :]

    def repr_str(self, x: str, level: int) -> str:
        if len(x) > self.maxstring:
            return self._sliced(x, str)
        # Short strings repeat (field values, statuses, names): their text is remembered.
        text = _short_texts_get(x)
        if text is None:
            text = repr(x)
            if len(text) >= MIN_SECRET_LEN:
                text = scrub_text(text)
            if len(_short_texts) >= 1024:
                _short_texts.clear()
            _short_texts[x] = text
        return text

    def _repr_bytes(self, x: Any, level: int) -> str:
        if type(x) is bytes:
            return self._sliced(x, bytes)
        return f"bytearray({self._sliced(x, bytearray)})"

    def repr_set(self, x: Any, level: int) -> str:
        # reprlib sorts the whole set first; a bounded slice of it is enough.
        if not x:
            return "set()"
        return self._repr_iterable(x, level, "{", "}", self.maxset)  # type: ignore[attr-defined,no-any-return]

    def repr_frozenset(self, x: Any, level: int) -> str:
        if not x:
            return "frozenset()"
        return self._repr_iterable(  # type: ignore[attr-defined,no-any-return]
            x, level, "frozenset({", "})", self.maxfrozenset
        )

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 1024:  # a repr is quadratic in the digits; over 4300 it raises
            return f"<int of {x.bit_length()} bits>"
        text = reprlib.Repr.repr_int(self, int(x), level)
        return scrub_text(text) if len(text) >= 13 else text

    # Mappings and pairs: masked by key.

    def _items(self, items: Any, level: int) -> str:
        pieces = []
        for i, (key, value) in enumerate(items):
            if i >= self.maxdict:
                pieces.append("...")
                break
            key_repr = self.repr1(key, level - 1)
            value_repr = MASK if is_secret_key(key) else self.repr1(value, level - 1)
            pieces.append(f"{key_repr}: {value_repr}")
        return "{" + ", ".join(pieces) + "}"

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        return self._items(dict.items(x), level)

    def repr_tuple(self, x: tuple[Any, ...], level: int) -> str:
        # A (key, value) pair under a secret-looking key: a header, a form field.
        if len(x) == 2 and isinstance(x[0], (str, bytes)) and is_secret_key(x[0]):
            return f"({self.repr1(x[0], level - 1)}, {MASK})"
        return super().repr_tuple(x, level)

    def _repr_method(self, x: Any, level: int) -> str:
        # Not its repr, which is the repr of the object it is bound to.
        try:
            return f"<bound method {_get(_get(x, '__func__'), '__qualname__')}>"
        except Exception:  # noqa: BLE001 -- a callable without a name
            return "<bound method>"

    # Everything else: never the program's own __repr__.

    def _repr_other(self, x: Any, level: int) -> str:
        cls = type(x)
        name = cls.__qualname__
        # The two usual kinds of the program's objects, once their class is known (every
        # test below depends on the class alone).
        kind = _kinds_get(cls)
        if kind is not None:
            if kind == "dataclass":
                return self._dataclass(x, name, level)
            return self._instance(x, cls, name, level)
        if isinstance(x, str):
            return f"{name}({self._sliced(x, str)})"
        if isinstance(x, (bytes, bytearray)):
            return f"{name}({self._sliced(x, bytes if isinstance(x, bytes) else bytearray)})"
        if isinstance(x, (int, float)):
            if _trusted_repr(cls):  # IntEnum and such
                return _cut(scrub_text(repr(x)), self.maxother)
            base_repr = int.__repr__ if isinstance(x, int) else float.__repr__
            return f"{name}({_cut(scrub_text(base_repr(x)), self.maxlong)})"
        if isinstance(x, tuple) and hasattr(cls, "_fields"):  # a namedtuple
            fields = [f for f in cls._fields if isinstance(f, str)]
            return self._fields(name, zip(fields, tuple.__iter__(x)), level)
        if "__dataclass_fields__" in getattr(cls, "__dict__", ()) or (
            dataclasses.is_dataclass(x) and not isinstance(x, type)
        ):
            _remember_kind(cls, "dataclass")
            return self._dataclass(x, name, level)
        if isinstance(x, dict):
            if level <= 0:
                return f"{name}({{...}})"
            return f"{name}({self._items(dict.items(x), level)})"
        # A mapping of the standard library (os.environ, ChainMap, mappingproxy...) is read
        # by items(), at most maxdict + 1 of them; the program's own mappings may do
        # anything in items() (read a file, a database) and are shown by their fields.
        if isinstance(x, Mapping) and _module_of(cls) in _MAPPING_MODULES:
            if level <= 0:
                return f"{name}({{...}})"
            return f"{name}({self._items(islice(x.items(), self.maxdict + 1), level)})"
        if isinstance(x, _DICT_VIEWS):  # their repr is the repr of every item
            items = list(islice(iter(x), self.maxlist + 1))  # type: ignore[call-overload]
            return f"{name}({self.repr1(items, level)})"
        if isinstance(x, BaseException):
            args = x.args if isinstance(x.args, tuple) else ()
            inner = ", ".join(self.repr1(a, level - 1) for a in args[: self.maxtuple])
            return f"{name}({inner})"
        if isinstance(x, (list, tuple, set, frozenset, deque)):
            base: Any = next(b for b in (list, tuple, set, frozenset, deque) if isinstance(x, b))
            return f"{name}({self.repr1(base(islice(base.__iter__(x), 64)), level)})"
        if _trusted_repr(cls):
            try:
                text = repr(x)
            except Exception as exc:  # noqa: BLE001 -- even a builtin's repr may fail
                return unrepresentable(x, exc)
            return scrub_text(_cut(text, self.maxother))
        _remember_kind(cls, "instance")
        return self._instance(x, cls, name, level)

    def _fields(self, name: str, pairs: Any, level: int) -> str:
        if level <= 0:
            return f"{name}(...)"
        pieces = []
        for i, (field, value) in enumerate(pairs):
            if i >= self.maxdict:
                pieces.append("...")
                break
            shown = MASK if is_secret_key(field) else self.repr1(value, level - 1)
            pieces.append(f"{field}={shown}")
        return f"{name}({', '.join(pieces)})"

    def _dataclass(self, x: Any, name: str, level: int) -> str:
        cls = type(x)
        names = _dataclass_names.get(cls)
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(x) if f.repr)
            if len(_dataclass_names) < 1024:
                _dataclass_names[cls] = names
        pairs = []
        for field in names:
            try:
                pairs.append((field, _get(x, field)))
            except AttributeError:  # not set yet (init=False)
                continue
        return self._fields(name, pairs, level)

    def _instance(self, x: Any, cls: type, name: str, level: int) -> str:
        """An object of the program's own type, by its fields (never its __repr__)."""
        module = str(getattr(cls, "__module__", "") or "").partition(".")[0]
        if module in _ARRAY_MODULES:
            parts = []
            for attribute in ("shape", "dtype"):
                try:
                    parts.append(f"{attribute}={_cut(str(_get(x, attribute)), 60)}")
                except Exception:  # noqa: BLE001 -- not array-like after all
                    continue
            return f"<{name}{' ' if parts else ''}{' '.join(parts)}>"
        pairs: list[tuple[str, Any]] = []
        try:
            own = _get(x, "__dict__")
        except Exception:  # noqa: BLE001 -- no __dict__ (slots only), or a hostile one
            own = None
        if type(own) is dict:
            pairs.extend(
                (k, v) for k, v in islice(dict.items(own), self.maxdict + 1) if type(k) is str
            )
        for base in cls.__mro__:
            slots = base.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if len(pairs) > self.maxdict:
                    break
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                    try:
                        pairs.append((slot, _get(x, slot)))
                    except Exception:  # noqa: BLE001 -- an unset slot
                        continue
        return self._fields(name, pairs, level)


_REPR = _ScrubbingRepr()


def unrepresentable(obj: object, exc: BaseException | None = None) -> str:
    """The placeholder for a value whose repr failed."""
    try:
        type_name = type(obj).__qualname__
    except Exception:  # noqa: BLE001
        type_name = "object"
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return f"<unrepresentable {type_name}{reason}>"


# Characters of text one safe_repr call may make (a container's text counts again in its
# parent's, so the deepest items see about a fourth of it): well above any limit's needs.
TEXT_BUDGET = 4 * DEFAULT_LIMIT
_budget = threading.local()  # .left: None (or unset) outside safe_repr


def safe_repr(obj: object, limit: int = DEFAULT_LIMIT) -> str:
    """A bounded, scrubbed repr of ``obj`` that never raises."""
    local = _budget
    outer = getattr(local, "left", None)  # set: called from inside another safe_repr
    if outer is None:
        local.left = TEXT_BUDGET
    try:
        text = _REPR.repr(obj)
    except Exception as exc:  # noqa: BLE001 -- RecursionError, user errors, anything
        return unrepresentable(obj, exc)
    finally:
        if outer is None:
            local.left = None
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
