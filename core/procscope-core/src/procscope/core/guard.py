"""The one guard between user code and ours.

Every place where user code calls into procscope (a patched method, a callback, an
exporter) runs under :func:`handle_internal_errors`, or, on paths too hot for a context
manager, catches ``Exception`` itself and calls :func:`log_internal_error`. Either way an
error of ours is logged once per place, with instrumentation suppressed so that logging
cannot recurse into our own hooks, and never reaches the host program, except under the
test suite (``PROCSCOPE_RAISE_INTERNAL_ERRORS=1``), where hiding it would hide bugs.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from types import TracebackType

from opentelemetry import context as otel_context

from . import shared_state

logger = logging.getLogger("procscope")

RAISE_ENV = "PROCSCOPE_RAISE_INTERNAL_ERRORS"


def raise_internal_errors() -> bool:
    """True under the test suite, where internal errors must surface."""
    return os.environ.get(RAISE_ENV, "").strip().lower() in ("1", "true", "yes")


def _site_of(tb: TracebackType | None) -> str:
    """Where an error was raised: the innermost frame, as ``file:line``."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno}"


def log_internal_error() -> None:
    """Log the exception being handled, once per raising site; re-raise under the tests.

    Call only from inside an ``except`` block.
    """
    exc_type, exc, tb = sys.exc_info()
    if raise_internal_errors():
        raise  # noqa: PLE0704 -- called only from an except block
    try:
        key = ("internal", exc_type, _site_of(tb))
        state = shared_state.get()
        with state.lock:
            if key in state.warned:
                return
            state.warned.add(key)
        token = otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        try:
            logger.warning(
                "procscope: internal error, ignored so that the program carries on "
                "(reported once per place)",
                exc_info=(exc_type, exc, tb),  # type: ignore[arg-type]
            )
        finally:
            otel_context.detach(token)
    except Exception:  # noqa: BLE001 -- logging itself failed; nothing more we can do
        pass


class handle_internal_errors:  # noqa: N801 -- reads as a verb, like contextlib's helpers
    """Context manager and decorator: swallow and log (once) any ``Exception`` inside.

    A class rather than ``@contextmanager`` because it sits on paths where the generator
    machinery of ``contextmanager`` costs more than the work it guards.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception):
            # KeyboardInterrupt, SystemExit and friends belong to the program.
            return False
        if raise_internal_errors():
            return False
        try:
            raise exc  # type: ignore[misc]
        except Exception:  # noqa: BLE001 -- exactly the errors this guard exists for
            log_internal_error()
        return True

    def __call__(self, func):  # type: ignore[no-untyped-def]
        import functools

        @functools.wraps(func)
        def guarded(*args, **kwargs):  # type: ignore[no-untyped-def]
            with self:
                return func(*args, **kwargs)
            return None

        return guarded


def warn_once(key: str, message: str, *args: object) -> None:
    """Log a warning about the environment or settings once per process per key."""
    state = shared_state.get()
    with state.lock:
        if key in state.warned:
            return
        state.warned.add(key)
    token = otel_context.attach(
        otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
    )
    try:
        logger.warning(message, *args)
    finally:
        otel_context.detach(token)
