"""What travels to a child process with the pickled Process object or pool call, and
setting procscope up in a child that starts a fresh interpreter.

With spawn and forkserver the child is a new interpreter that has imported nothing of
procscope. The Process object comes to it pickled, after multiprocessing has prepared the
child (sys.path, the main module); unpickling the :class:`Launch` in its ``__dict__``
imports this module and calls :func:`_restore_launch`, which sets procscope up before the
child's ``_bootstrap`` runs:

* with the parent's settings, through the pipeline builder the parent registered with
  :mod:`procscope.core.child` (``procscope.setup()``, when the parent used it and the
  ``procscope`` distribution is installed here: the same DB, level, sample rate,
  exporters);
* otherwise by instrumenting with the global tracer provider (the plugin used alone).

A pool call (:class:`PoolCall`) is pickled the same way into the pool's worker, with the
context of the code that submitted it.
"""

from __future__ import annotations

from typing import Any

from procscope.core import child
from procscope.core.guard import log_internal_error

from ._runtime import extract


class Launch:
    """The parent's trace context and settings, for one child process."""

    __slots__ = ("carrier", "method", "name", "settings", "spans", "target")

    def __init__(
        self,
        carrier: dict[str, str],
        settings: Any,
        spans: str,
        method: str,
        name: str,
        target: str,
    ) -> None:
        self.carrier = carrier
        self.settings = settings
        self.spans = spans
        self.method = method
        self.name = name
        self.target = target

    def context(self) -> Any:
        return extract(self.carrier)

    def __reduce__(self) -> Any:
        settings = None
        if self.settings is not None:
            # Plain values, so that the child can unpickle them before anything of
            # procscope's root package is imported there.
            settings = dict(self.settings.__dict__)
        return (
            _restore_launch,
            (
                self.carrier,
                settings,
                self.spans,
                self.method,
                self.name,
                self.target,
                child.builders(),
            ),
        )


def _restore_launch(
    carrier: dict[str, str],
    settings: dict[str, Any] | None,
    spans: str,
    method: str,
    name: str,
    target: str,
    builders: dict[str, str] | None = None,
) -> Launch:
    try:
        from . import _program

        _program.mark_child()
        ensure_instrumented(settings, spans, builders)
    except Exception:  # noqa: BLE001 -- the child must run even if procscope cannot
        log_internal_error()
    return Launch(carrier, None, spans, method, name, target)


def ensure_instrumented(
    settings: dict[str, Any] | None, spans: str, builders: dict[str, str] | None = None
) -> None:
    """Set procscope up in this (child) process as in its parent, once: through the
    builder the parent registered in procscope.core (``builders``), if found here."""
    import os

    from . import _switch
    from ._runtime import ENV_SPANS

    if _switch.is_on():
        # Forked from a set-up process, or set up at start by sitecustomize.
        return
    # The parent's choice, also for the processes this child starts.
    os.environ[ENV_SPANS] = spans
    if settings is not None and child.set_up_like_parent(settings, builders):
        if _switch.is_on():
            return
    _switch.instrument(spans=spans)


class PoolCall:
    """A function submitted to a process pool, with the submitter's trace context."""

    __slots__ = ("carrier", "fn", "pool_kind")

    def __init__(self, fn: Any, carrier: dict[str, str], pool_kind: str) -> None:
        self.fn = fn
        self.carrier = carrier
        self.pool_kind = pool_kind

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        # self positional-only: the submitted call may take a keyword named self.
        from ._runtime import runtime
        from ._threads import run_pool_call

        if not runtime.active:
            return self.fn(*args, **kwargs)
        return run_pool_call(self.fn, extract(self.carrier), self.pool_kind, args, kwargs)

    def __reduce__(self) -> Any:
        return (PoolCall, (self.fn, self.carrier, self.pool_kind))

    def __repr__(self) -> str:
        return repr(self.fn)
