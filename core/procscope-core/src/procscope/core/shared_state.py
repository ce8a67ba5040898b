"""Process-wide state: the live settings, names given to objects, once-only warnings.

One module in one distribution (``procscope-core``), so one state per process whichever
plugin reads it. Kept on one namespace object, rather than as module globals, because the
hot paths hold its ``__dict__`` and read keys from it without an attribute look-up.
"""

from __future__ import annotations

import threading
import types
import weakref

from .forksafe import ForkSafeLock

TYPE_CHECKING = False  # (not typing's: procscope run's launcher imports this module)
if TYPE_CHECKING:
    from typing import Any


class LiveSettings:
    """The settings the instrumentors read on every call, changed by ``procscope.configure``.

    Plain attributes, read without a lock: a reader that sees the old value for one call
    after a change is harmless, and a lock would cost more than the read on hot paths.
    """

    __slots__ = ("capture_content", "configured", "level", "overflow", "sample_rate")

    def __init__(self) -> None:
        self.level = "full"
        self.sample_rate = 1.0
        self.capture_content = True
        # "wait" or "drop": what a full export queue does (read only when it is full).
        self.overflow = "wait"
        # True once procscope.setup() (or the configurator) has run in this process.
        self.configured = False


class SettingWarning(UserWarning):
    """A procscope setting had a bad value; the default was used instead."""


SettingWarning.__module__ = "procscope"

_STATE = types.SimpleNamespace(
    SettingWarning=SettingWarning,
    # Taken by warnings, names and error logging, also in a fork child before any at-fork
    # hook of ours has run: a lock new in each process (see forksafe).
    lock=ForkSafeLock(threading.RLock),
    settings=LiveSettings(),
    names=weakref.WeakKeyDictionary(),
    warned=set(),
)


def get() -> Any:
    """Return the single shared-state object of this process."""
    return _STATE


def settings() -> LiveSettings:
    """The live settings of this process."""
    return get().settings  # type: ignore[no-any-return]
