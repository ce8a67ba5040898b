"""The recorded content of a message: ``safe_repr``, with a short cut for plain messages.

``safe_repr`` (``procscope.core.saferepr``) runs ``reprlib`` machinery for every value: a
method look-up by type name per element, a regular expression per dictionary key. That is
about 3 us for a small dict, a third of what a sampled put costs on top of its span. Most
messages are plain: a number, a short string, or a flat dict, list or tuple of those. For
exactly those (built-in types only, no subclass whose ``__repr__`` might differ or fail,
within ``reprlib``'s size limits) the text is made here directly, scrubbed the same way,
identical to what ``safe_repr`` gives (tests/messaging/test_messaging_span_attributes.py
compares them); anything else goes to ``safe_repr`` itself.
"""

from __future__ import annotations

from typing import Any

from procscope.core.saferepr import (
    _REPR,
    MASK,
    MIN_SECRET_LEN,
    is_secret_key,
    register_key_cache,
    safe_repr,
    scrub_text,
)

LIMIT = 256  # characters of content recorded per message

# reprlib's limits, as safe_repr's Repr sets them.
_MAX_STRING = _REPR.maxstring
_MAX_LONG = _REPR.maxlong
_MAX_ITEMS = min(_REPR.maxdict, _REPR.maxlist, _REPR.maxtuple)

_NUMBERS = (int, float, bool, type(None))
_PLAIN_TYPES = frozenset((int, float, bool, type(None), str, bytes))

# Whether a dict key looks like a secret (a regular expression search), remembered for the
# keys met so far: messages of one program reuse a few keys. Bounded: once full, further
# keys are checked each time.
_secret_keys: dict[str, bool] = register_key_cache({})
_SECRET_KEYS_MAX = 4096

# The recorded text of the short strings met lately: scrub_text's checks cost a
# few times the repr, and messages repeat their strings (keys' values, statuses, names).
# Emptied when full, and when the scrubbing rules change.
_scrubbed: dict[Any, str] = register_key_cache({})
_scrubbed_get = _scrubbed.get
_SCRUBBED_MAX = 1024


def _scalar(value: Any) -> str | None:
    """repr of a plain scalar as reprlib (under safe_repr's settings) makes it, or None."""
    cls = type(value)
    if cls is str or cls is bytes:
        if len(value) > _MAX_STRING:
            return None
        # Strings only: a bytes key beside an equal-hash str key would make look-ups
        # compare them (a BytesWarning under python -b).
        text = _scrubbed_get(value) if cls is str else None
        if text is None:
            text = repr(value)
            if len(text) > _MAX_STRING:
                return None
            # Value patterns (URLs with a password, tokens, card numbers), as safe_repr
            # masks them; the answer remembered (see _scrubbed).
            if len(text) >= MIN_SECRET_LEN:
                text = scrub_text(text)
            if cls is str:
                if len(_scrubbed) >= _SCRUBBED_MAX:
                    _scrubbed.clear()
                _scrubbed[value] = text
        return text
    if cls is int:
        text = repr(value)
        return text if len(text) < 13 else None  # long enough for a card number: safe_repr
    if cls is float or cls is bool or value is None:
        return repr(value)
    return None


def _secret(key: str) -> bool:
    found = _secret_keys.get(key)
    if found is None:
        found = is_secret_key(key)
        if len(_secret_keys) < _SECRET_KEYS_MAX:
            _secret_keys[key] = found
    return found


def _fast(item: Any) -> str | None:
    cls = type(item)
    if cls in _PLAIN_TYPES:
        return _scalar(item)
    if cls is dict:
        if not item:
            return "{}"
        if len(item) > _MAX_ITEMS:
            return None
        pieces = []
        for key, value in item.items():
            if type(key) is not str:
                return None
            key_text = _scalar(key)
            value_text = MASK if _secret(key) else _scalar(value)
            if key_text is None or value_text is None:
                return None
            pieces.append(f"{key_text}: {value_text}")
        return "{" + ", ".join(pieces) + "}"
    if cls is list or cls is tuple:
        if len(item) > _MAX_ITEMS:
            return None
        if cls is tuple and len(item) == 2 and type(item[0]) is str and _secret(item[0]):
            return None  # a (key, value) pair under a secret key: safe_repr masks the value
        pieces = []
        for value in item:
            text = _scalar(value)
            if text is None:
                return None
            pieces.append(text)
        if cls is list:
            return "[" + ", ".join(pieces) + "]"
        return "(" + ", ".join(pieces) + (",)" if len(pieces) == 1 else ")")
    return None


def content_repr(item: Any) -> str:
    """The message's content as recorded: ``safe_repr(item, LIMIT)``, faster when plain."""
    text: str | None
    if type(item) is int:  # (the commonest message, as _scalar makes it: no calls)
        text = repr(item)
        if len(text) < 13:
            return text
    try:
        text = _fast(item)
    except Exception:  # noqa: BLE001 -- safe_repr handles (and bounds) whatever this hit
        text = None
    if text is None:
        return safe_repr(item, LIMIT)
    if len(text) > LIMIT:
        text = text[: LIMIT - 3] + "..."
    return text
