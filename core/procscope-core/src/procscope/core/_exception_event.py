"""An exception as a span's "exception" event shows it, from modules that a cheap
child's start-up may import (no OpenTelemetry here: ``cheap_child``)."""

from __future__ import annotations

from typing import Any


def exception_attributes(exc: BaseException) -> dict[str, Any]:
    """The attributes of the SDK's "exception" event, as ``Span.record_exception`` makes
    them, taken at once: a record must not keep the exception (its traceback holds every
    frame of the failed call) alive until the drain."""
    import traceback

    kind = type(exc)
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 -- the program's __str__ is not ours to fail on
        message = f"<unprintable {kind.__name__} object>"
    try:
        stacktrace = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    except Exception:  # noqa: BLE001
        stacktrace = f"{kind.__qualname__}: {message}"
    module = kind.__module__
    qualname = kind.__qualname__
    return {
        "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
        "exception.message": message,
        "exception.stacktrace": stacktrace,
        "exception.escaped": "False",
    }


def exception_fields(exc: BaseException) -> tuple[dict[str, Any], str]:
    """(event attributes, status description) of an exception that ended a span: what
    the lifecycle's ``ExceptionRecord`` and a cheap child's end record."""
    event = exception_attributes(exc)
    return event, f"{type(exc).__name__}: {event['exception.message']}"
