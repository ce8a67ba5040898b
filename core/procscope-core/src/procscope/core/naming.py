"""Readable names given to queues, pipes, processes and objects (``procscope.name``)."""

from __future__ import annotations

from typing import TypeVar

from . import shared_state

T = TypeVar("T")

_ATTR = NAME_ATTR = "_procscope_name"  # (NAME_ATTR: for readers that look it up themselves)


def set_name(obj: T, name: str) -> T:
    """Name ``obj`` for procscope's records; returns ``obj`` unchanged.

    The name is kept on the object itself when it takes attributes, otherwise in a
    process-wide weak map, so that naming never keeps an object alive.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("procscope.name() needs a non-empty string name")
    try:
        object.__setattr__(obj, _ATTR, name)
        return obj
    except (AttributeError, TypeError):
        pass
    state = shared_state.get()
    try:
        with state.lock:
            state.names[obj] = name
    except TypeError:
        raise TypeError(
            f"procscope.name() cannot name a {type(obj).__qualname__}: it takes neither "
            "attributes nor weak references"
        ) from None
    return obj


def get_name(obj: object) -> str | None:
    """The name given to ``obj`` with :func:`set_name`, or None."""
    try:
        name = obj.__dict__.get(_ATTR)  # skips __getattr__ hooks of user classes
    except Exception:  # noqa: BLE001 -- no __dict__, or a hostile one
        # A C type whose instances take attributes but show no __dict__ (an asyncio
        # Task): set_name put the name there all the same.
        try:
            name = object.__getattribute__(obj, _ATTR)
        except Exception:  # noqa: BLE001
            name = None
    if name is not None:
        return name  # type: ignore[no-any-return]
    names = shared_state.get().names
    if not names:
        return None
    try:
        return names.get(obj)  # type: ignore[no-any-return]
    except TypeError:
        return None
