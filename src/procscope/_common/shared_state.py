"""Process-wide state that every loaded copy of ``_common`` shares.

The root distribution imports these helpers as ``procscope._common`` and each plugin as
``procscope.<plugin>._common``; Python treats those as different modules with their own
globals. Anything that must be one per process (live settings, names given to objects,
once-only warnings) is therefore kept on a single module object registered in
``sys.modules`` under a fixed key. ``dict.setdefault`` is atomic under the GIL, so two
copies racing to create it still end up with the same object.
"""

from __future__ import annotations

import sys
import threading
import types
import weakref
from typing import Any

from .forksafe import ForkSafeLock

_KEY = "_procscope_shared_state_v1"


class LiveSettings:
    """The settings the instrumentors read on every call, changed by ``procscope.configure``.

    Plain attributes, read without a lock: a reader that sees the old value for one call
    after a change is harmless, and a lock would cost more than the read on hot paths.
    """

    __slots__ = ("capture_content", "configured", "level", "sample_rate")

    def __init__(self) -> None:
        self.level = "full"
        self.sample_rate = 1.0
        self.capture_content = True
        # True once procscope.setup() (or the configurator) has run in this process.
        self.configured = False


def _setting_warning_class() -> type[UserWarning]:
    # One class for the whole process: a user filtering on procscope.SettingWarning must
    # also catch the warnings that a plugin's own copy of these helpers gives.
    class SettingWarning(UserWarning):
        """A procscope setting had a bad value; the default was used instead."""

    SettingWarning.__module__ = "procscope"
    return SettingWarning


def _create() -> types.ModuleType:
    state = types.ModuleType(_KEY)
    state.SettingWarning = _setting_warning_class()  # type: ignore[attr-defined]
    # Taken by warnings, names and error logging, also in a fork child before any at-fork
    # hook of ours has run: a lock new in each process (see forksafe).
    state.lock = ForkSafeLock(threading.RLock)  # type: ignore[attr-defined]
    state.settings = LiveSettings()  # type: ignore[attr-defined]
    state.names = weakref.WeakKeyDictionary()  # type: ignore[attr-defined]
    state.warned = set()  # type: ignore[attr-defined]
    return state


def get() -> Any:
    """Return the single shared-state object of this process."""
    state = sys.modules.get(_KEY)
    if state is None:
        state = sys.modules.setdefault(_KEY, _create())
    return state


def settings() -> LiveSettings:
    """The live settings of this process."""
    return get().settings  # type: ignore[no-any-return]
