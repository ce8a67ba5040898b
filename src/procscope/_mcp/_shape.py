"""Results for a model: compact JSON, bounded in size, saying what was left out.

Every result is one JSON object of at most :data:`RESULT_CHARS` characters (about 6,000
tokens). Lists are cut to their ``limit`` first; a result still too big loses items from
the end of its main list until it fits. Either way the result's ``left_out`` says how many
were not shown and how to ask for them (a narrower filter, a later ``since``...).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: The most characters of JSON a tool returns.
RESULT_CHARS = 20_000
#: Recorded text (message contents, attribute values, exception messages) is cut here.
TEXT_CHARS = 300
#: Stack traces are cut here (their last lines, where the exception is, are kept).
STACK_CHARS = 1_500

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def iso(ns: int | None) -> str | None:
    """Epoch nanoseconds as ISO 8601 UTC (what since/until/around/time take back)."""
    if ns is None:
        return None
    from procscope._cli._output import iso_time

    return iso_time(ns)


def ms(ns: int | float | None) -> float | None:
    """A duration in nanoseconds as milliseconds, to the microsecond."""
    return None if ns is None else round(ns / 1e6, 3)


def clip(text: Any, limit: int = TEXT_CHARS) -> Any:
    """A string cut to ``limit`` characters (marked with an ellipsis); other values as
    they are."""
    if isinstance(text, str) and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def clip_stack(text: Any) -> Any:
    """A stack trace's last :data:`STACK_CHARS` characters: the innermost frames and the
    exception line are at its end."""
    if isinstance(text, str) and len(text) > STACK_CHARS:
        return "…" + text[-(STACK_CHARS - 1) :]
    return text


def clip_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes with long values cut (lists: their first 20 items)."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key == "exception.stacktrace":
            out[key] = clip_stack(value)
        elif isinstance(value, list):
            out[key] = [clip(v, 100) for v in value[:20]] + (["…"] if len(value) > 20 else [])
        else:
            out[key] = clip(value)
    return out


def compact(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` without its None and False values (absent means none: fewer tokens)."""
    return {k: v for k, v in item.items() if v is not None and v is not False}


def encode(data: Any) -> str:
    return _encode(data)


def left_out(data: dict[str, Any], key: str, total: int | None, hint: str) -> None:
    """Record in ``data`` that only part of ``data[key]`` is shown (``total``: how many
    there are, when known; None: at least one more)."""
    shown = len(data[key])
    if total is not None and total <= shown:
        return
    data["left_out"] = {
        "shown": shown,
        "total": total,
        "more": "at least one more" if total is None else total - shown,
        "how_to_see_more": hint,
    }


def bounded(
    data: dict[str, Any],
    key: str | None,
    hint: str | Callable[[list[Any]], str],
    *,
    keep_last: bool = False,
) -> str:
    """``data`` as JSON of at most :data:`RESULT_CHARS` characters: items are dropped from
    the end of ``data[key]`` (the largest prefix that fits is kept; with ``keep_last``,
    from its start: the largest suffix) and counted in ``left_out``, whose hint is
    ``hint`` (or ``hint(shown items)``). Returns the JSON text; ``data`` is changed to
    match it."""
    text = encode(data)
    if len(text) <= RESULT_CHARS or key is None or not isinstance(data.get(key), list):
        return text if len(text) <= RESULT_CHARS else _cut_hard(data, text)
    items = data[key]
    previous = data.get("left_out")
    # The total the tool knew, else what it had (and more when it said so).
    total = len(items) if previous is None else previous["total"]

    def cut(n: int) -> None:
        shown = (items[len(items) - n :] if n else []) if keep_last else items[:n]
        data[key] = shown
        data.pop("left_out", None)
        why = f" (this answer was cut at {RESULT_CHARS:,} characters)"
        left_out(data, key, total, (hint(shown) if callable(hint) else hint) + why)

    low, high = 0, len(items)
    while low < high:  # the largest prefix that fits, by bisection
        middle = (low + high + 1) // 2
        cut(middle)
        if len(encode(data)) <= RESULT_CHARS:
            low = middle
        else:
            high = middle - 1
    cut(low)
    text = encode(data)
    return text if len(text) <= RESULT_CHARS else _cut_hard(data, text)


def _cut_hard(data: dict[str, Any], text: str) -> str:
    """The last resort for a single huge item: say so instead of sending it."""
    data.clear()
    data["error"] = (
        f"the result ({len(text):,} characters) is over the {RESULT_CHARS:,}-character limit "
        "even cut to one item; ask for less (a narrower filter, depth, or fewer columns)"
    )
    return encode(data)
