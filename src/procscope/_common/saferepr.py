"""Reprs of user values that cannot fail, cannot grow without bound, and hide secrets.

Message bodies and object states are user data: their ``__repr__`` may raise, recurse,
be slow on huge containers, or print a password. Everything recorded goes through
:func:`safe_repr`, which bounds the work by size (``reprlib`` stops after a few items per
container and a few levels of nesting), masks values under keys that look like secrets,
and turns any exception into a short placeholder.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

DEFAULT_LIMIT = 512
MASK = "***"

# Keys whose values are masked: a password, a token, an API key, a cookie...
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|private[-_]?key|auth|credential|"
    r"cookie|session[-_]?id|signature",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    """True for a key or attribute name under which a value should never be recorded."""
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


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

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        n = len(x)
        if n == 0:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = []
        for i, key in enumerate(x):
            if i >= self.maxdict:
                pieces.append("...")
                break
            key_repr = self.repr1(key, level - 1)
            value_repr = MASK if is_secret_key(key) else self.repr1(x[key], level - 1)
            pieces.append(f"{key_repr}: {value_repr}")
        return "{" + ", ".join(pieces) + "}"

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception as exc:  # noqa: BLE001 -- any user __repr__ may fail
            return unrepresentable(x, exc)
        if len(text) > self.maxother:
            half = max(0, (self.maxother - 3) // 2)
            text = text[:half] + "..." + text[len(text) - half :]
        return text


_REPR = _ScrubbingRepr()


def unrepresentable(obj: object, exc: BaseException | None = None) -> str:
    """The placeholder for a value whose repr failed."""
    try:
        type_name = type(obj).__qualname__
    except Exception:  # noqa: BLE001
        type_name = "object"
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return f"<unrepresentable {type_name}{reason}>"


def safe_repr(obj: object, limit: int = DEFAULT_LIMIT) -> str:
    """A bounded, scrubbed repr of ``obj`` that never raises."""
    try:
        text = _REPR.repr(obj)
    except Exception as exc:  # noqa: BLE001 -- RecursionError, user errors, anything
        return unrepresentable(obj, exc)
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
