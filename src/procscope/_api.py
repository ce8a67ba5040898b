"""The module-level API: ``procscope.setup``, ``configure``, ``shutdown``, ``name``..."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

from procscope.core import child
from procscope.core.forksafe import ForkSafeLock
from procscope.core.guard import handle_internal_errors
from procscope.core.naming import set_name
from procscope.core.saferepr import set_extra_rules
from procscope.core.settings import SettingWarning, resolve

from ._scope import Scope

T = TypeVar("T")

# A fork child may call setup() or shutdown() (even in an at-fork hook of its own) while
# this lock's copy is held by a parent's thread: a lock new in each process.
_lock = ForkSafeLock()
_scope: Scope | None = None


def setup(
    *,
    level: str | None = None,
    sample_rate: float | None = None,
    exporter: str | None = None,
    db: str | None = None,
    capture_content: bool | None = None,
    sampling: str | None = None,
    db_max_bytes: int | None = None,
    db_max_age: float | None = None,
    scrub_keys: str | list[str] | None = None,
    scrub_values: str | list[str] | None = None,
    overflow: str | None = None,
    flight_recorder: bool | str | None = None,
    flight_window: float | str | None = None,
    flight_memory: int | str | None = None,
) -> Scope:
    """Start recording: provider, processors, exporters and the instrumentors of ``level``.

    Each keyword left out comes from its environment variable, else the default (see
    docs/configuration.md). A bad value warns once and falls back to the default. A second
    call warns and returns the first scope unchanged.
    """
    global _scope
    with _lock:
        if _scope is not None:
            warnings.warn(
                "procscope.setup() was already called in this process; keeping the first "
                "configuration (use procscope.configure() to change it)",
                SettingWarning,
                stacklevel=2,
            )
            return _scope
        scope = Scope(
            resolve(
                db=db,
                level=level,
                sample_rate=sample_rate,
                capture_content=capture_content,
                exporter=exporter,
                sampling=sampling,
                db_max_bytes=db_max_bytes,
                db_max_age=db_max_age,
                scrub_keys=scrub_keys,
                scrub_values=scrub_values,
                overflow=overflow,
                flight_recorder=flight_recorder,
                flight_window=flight_window,
                flight_memory=flight_memory,
            )
        )
        with handle_internal_errors():
            # Before anything records: the rules every recorded value is scrubbed by.
            set_extra_rules(scope.settings.scrub_keys, scope.settings.scrub_values)
            scope.start()
        _scope = scope
        return scope


def current_scope() -> Scope | None:
    """The scope set up in this process, if any."""
    return _scope


def set_up_child(settings: dict[str, Any]) -> None:
    """In a child process: set up as the parent did (its settings' plain values), once."""
    if current_scope() is None:
        exporters = tuple(settings.get("exporters") or ())
        setup(
            db=settings.get("db"),
            level=settings.get("level"),
            sample_rate=settings.get("sample_rate"),
            capture_content=settings.get("capture_content"),
            exporter=",".join(exporters) or "none",
        )


# What the lifecycle instrumentor's child set-up uses, through procscope.core.child: the
# plugins never import this distribution by name (installed alone they work without it).
child.register(
    set_up=f"{__name__}:set_up_child",
    python_environ="procscope._cli._run:instrumented_environ",
    # setup() imports every procscope instrumentor to switch it on or off.
    preload=(
        __name__,
        "procscope.exporters.tracedb",
        "procscope.instrumentation.messaging",
        "procscope.instrumentation.state",
    ),
)


def configure(
    *,
    level: str | None = None,
    sample_rate: float | None = None,
    capture_content: bool | None = None,
    overflow: str | None = None,
    flight_recorder: bool | str | None = None,
    flight_window: float | str | None = None,
    flight_memory: int | str | None = None,
) -> None:
    """Change settings while the program runs (new spans see them at once)."""
    scope = _scope
    if scope is None:
        warnings.warn(
            "procscope.configure() before procscope.setup(): nothing to configure",
            SettingWarning,
            stacklevel=2,
        )
        return
    scope.configure(
        level=level, sample_rate=sample_rate, capture_content=capture_content, overflow=overflow,
        flight_recorder=flight_recorder, flight_window=flight_window,
        flight_memory=flight_memory,
    )


def dump(reason: str = "procscope.dump()") -> bool:
    """Write the flight recorder's window out now, as one trace of spans
    (docs/flight-recorder.md). False when the recorder is off in this process."""
    from procscope.core import flight

    with handle_internal_errors():
        return flight.dump(str(reason))
    return False


def shutdown() -> None:
    """Flush everything recorded, uninstrument, and close the exporters."""
    global _scope
    with _lock:
        scope, _scope = _scope, None
    if scope is not None:
        scope.shutdown()


def name(obj: T, name: str) -> T:
    """Give ``obj`` (a queue, pipe, process or traced object) a readable name."""
    return set_name(obj, name)


def trace_state(
    obj_or_class: Any = None,
    name: str | None = None,
    fields: Any = None,
) -> Any:
    """Record the state changes of an object, or of every instance of a class.

    Usable as ``@procscope.trace_state``, ``@procscope.trace_state(name=...)`` or
    ``procscope.trace_state(obj, name=..., fields=[...])``.
    """
    from procscope.instrumentation.state import trace_state as _trace_state

    return _trace_state(obj_or_class, name=name, fields=fields)
