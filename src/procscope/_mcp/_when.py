"""Instants given by a model, read as the CLI reads them (``_cli/_output.parse_when``):
ISO 8601 with or without a UTC offset (local time without), or a time of day (today)."""

from __future__ import annotations

from ._spec import ToolInputError


def instant(text: str, name: str) -> int:
    """``text`` as epoch nanoseconds, or a tool error naming the parameter."""
    from procscope._cli._output import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        raise ToolInputError(
            f"{name}: {exc}. Times in results are ISO 8601 UTC and can be passed back as they are"
        ) from None


def time_range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    start = None if since is None else instant(since, "since")
    end = None if until is None else instant(until, "until")
    if start is not None and end is not None and end <= start:
        raise ToolInputError(f"until ({until}) must be after since ({since})")
    return start, end
