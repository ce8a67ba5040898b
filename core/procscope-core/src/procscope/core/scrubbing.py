"""Masking secrets in recorded text: which keys are secret-looking, which values are.

Used by :mod:`.saferepr` (every recorded repr), the messaging and state short cuts (which
make the same text faster) and the lifecycle's command lines. The rules are listed in
docs/scrubbing.md; :func:`set_extra_rules` adds the program's own (the settings
``scrub_keys`` and ``scrub_values``). Every loaded copy of these helpers (the root's and
each plugin's) applies the same rules, kept in the shared state.
"""

from __future__ import annotations

import re

from . import shared_state

TYPE_CHECKING = False  # (not typing's: procscope run's launcher imports this module)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

MASK = "***"

# Words that make a key, field or attribute name secret-looking (searched anywhere in it,
# case-insensitive).
SECRET_WORDS = (
    r"pass(?:word|wd|phrase)?|secret|token|api[-_]?key|private[-_]?key|auth|credential|"
    r"cookie|session[-_]?id|signature|cvv|cvc|card[-_]?(?:num|number|no)\b|"
    r"credit[-_]?card|ccnum|access[-_]?key|jwt|bearer"
)
SECRET_KEY = re.compile(SECRET_WORDS, re.IGNORECASE)

# Secret-looking values, whatever they are under. One alternation, so that a clean string
# costs one scan. The card-number branch only finds candidates: the Luhn check decides.
_VALUE_RULES = [
    # scheme://user:password@host: the password.
    r"(?P<url>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s/?#@'\"]+(?=@)",
    # key=value, key: value, 'key': 'value', "key": "value" under a secret-looking key.
    r"(?P<kv>(?i:" + SECRET_WORDS + r")[\w.-]{0,40}['\"]?\s*[:=]\s*)"
    r"(?:'[^']*'?|\"[^\"]*\"?|(?i:(?:bearer|basic|token)\s+)?[^\s,;&'\")}\]]+)",
    # Authorization schemes.
    r"(?P<auth>\b(?i:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{6,}=*",
    # JWT: three base64url segments, the header's JSON starting '{"'.
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    # AWS access key ids, GCP API keys, GitHub, Slack, Stripe tokens.
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
    r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}",
    # A private key, to its end (or the end of the text, if cut).
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    # Card numbers: 13 to 19 digits, single spaces or dashes between, a major network's
    # first digit (2 to 6; so no ns/ms timestamps, which start with 1 until 2033).
    r"(?P<card>(?<![\d.])[2-6]\d(?:[ -]?\d){11,17}(?![\d]))",
]

_KEY = re.compile(SECRET_WORDS, re.IGNORECASE)
_key_search = _KEY.search
# The value patterns' substitution, compiled at the first text that passes scrub_text's
# quick test: compiling them took about 1 ms of every process's start, where most
# processes scrub only short command lines that never need them.
_value_sub: Any = None
# The program's own rules (set_extra_rules), compiled apart from the built-in ones so that
# their groups, flags and back-references mean what they say.
_extra_key_search: Any = None
_extra_value_sub: Any = None

# Texts shorter than this are not looked at (a repr's quotes included: 8 characters of
# the value, such as "pw=abcde", are too few to be a credential worth the cost).
MIN_SECRET_LEN = 10


def set_extra_rules(keys: str | None = None, values: str | None = None) -> None:
    """Also mask values under keys matching ``keys`` (a regular expression, searched
    case-insensitively in the key) and text matching ``values`` (a regular expression),
    besides the built-in rules; None: the built-in rules only. The settings scrub_keys and
    scrub_values (PROCSCOPE_SCRUB_KEYS, PROCSCOPE_SCRUB_VALUES) set these at setup.
    Raises ``re.error`` for a bad expression, before changing anything."""
    if keys is not None:
        re.compile(keys, re.IGNORECASE)
    if values is not None:
        re.compile(values)
    with shared_state.get().lock:
        _apply_rules(keys, values)


def _apply_rules(keys: str | None, values: str | None) -> None:
    """Take the extra rules into the expressions (under the shared lock)."""
    global _extra_key_search, _extra_value_sub
    _extra_key_search = re.compile(keys, re.IGNORECASE).search if keys else None
    _extra_value_sub = re.compile(values).sub if values else None
    _key_rules_changed()


_secret_cache: dict[Any, bool] = {}
# Caches of is_secret_key's answers kept elsewhere (the hot paths' own dicts): emptied in
# place when the rules change.
_key_caches: list[dict[Any, Any]] = [_secret_cache]  # and _short_texts, below


def register_key_cache(cache: dict[Any, Any]) -> dict[Any, Any]:
    """Have ``cache`` (of is_secret_key's or scrub_text's answers) emptied whenever the
    rules change."""
    _key_caches.append(cache)
    return cache


def _key_rules_changed() -> None:
    for cache in _key_caches:
        cache.clear()


def is_secret_key(key: object) -> bool:
    """True for a key or attribute name (str or bytes) under which a value is never recorded."""
    if type(key) is str:
        text = key
    elif isinstance(key, str):
        text = str.__getitem__(key, slice(0, 256))  # not the subclass's own methods
    elif isinstance(key, (bytes, bytearray)):
        base: Any = bytes if isinstance(key, bytes) else bytearray
        # As text: one cache of str keys only (a bytes key beside an equal-hash str key
        # would make every look-up compare them, a BytesWarning under python -b).
        text = bytes(base.__getitem__(key, slice(0, 256))).decode("latin-1")
    else:
        return False
    found = _secret_cache.get(text)
    if found is None:
        head = text[:256]
        found = _key_search(head) is not None or (
            _extra_key_search is not None and _extra_key_search(head) is not None
        )
        if len(_secret_cache) < 10_000:
            _secret_cache[text] = found
    return found


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if position % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _replace(match: re.Match[str]) -> str:
    group = match.lastgroup
    if group == "card":
        digits = match.group().replace(" ", "").replace("-", "")
        return MASK if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()
    if group == "url" or group == "kv" or group == "auth":  # keep the lead-in
        return match.group(group) + MASK
    return MASK


_digit_run = re.compile(r"[0-9][0-9][0-9][0-9]").search


def scrub_text(text: str) -> str:
    """``text`` with secret-looking values masked (the value patterns above); the very
    same object when nothing is found, which is the cheap, usual case.

    A quick test first, of what every pattern needs: '@', ':' or '=' (URLs, key=value),
    a run of digits (cards), or one of a few literal parts (GitHub's and Stripe's
    prefixes, where a mere '_' would send every snake_case path to the expression). Only
    a text that passes runs the full alternation (the one regular expression)."""
    if len(text) < MIN_SECRET_LEN:
        return text
    if _extra_value_sub is not None:
        text = _extra_value_sub(MASK, text)
    if not (
        "=" in text
        or ":" in text
        or "@" in text
        or ("_" in text and ("gh" in text or "github_pat_" in text or "k_live_" in text
                             or "k_test_" in text))
        or "eyJ" in text
        or "AKIA" in text
        or "ASIA" in text
        or "ABIA" in text
        or "ACCA" in text
        or "AIza" in text
        or "xox" in text
        or "-----" in text
        or "earer" in text
        or "EARER" in text
        or "asic" in text
        or "ASIC" in text
        # 13 digits and two quotes at least; [0-9] rather than \d: a faster scan.
        or (len(text) >= 15 and _digit_run(text) is not None)
    ):
        return text
    global _value_sub
    if _value_sub is None:
        # (two threads may both compile it: the same pattern either way)
        _value_sub = re.compile("|".join(_VALUE_RULES)).sub
    return _value_sub(_replace, text)  # type: ignore[no-any-return]


def scrub_command(args: Sequence[str]) -> list[str]:
    """A command line with its secrets masked: each argument by the value patterns
    (``--password=x``, a URL with a password, ``Authorization: Bearer x``), and the
    argument after a secret-looking option (``--password x``, ``-token x``)."""
    out: list[str] = []
    mask_next = False
    for arg in args:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        text = scrub_text(arg)
        if arg.startswith("-") and "=" not in arg and is_secret_key(arg.lstrip("-")):
            mask_next = True
        out.append(text)
    return out
