"""Patching names and putting the originals back, by identity.

A hand-rolled patcher rather than wrapt: uninstrument must leave exactly the object that
was there before (``threading.Thread.start is original``), and these patches sit on
paths (thread start, task creation) where a wrapt proxy costs more than a closure.
"""

from __future__ import annotations

from typing import Any

from procscope.core.patched import keep_identity

_MISSING = object()


class Patches:
    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def patch(self, owner: Any, name: str, make: Any) -> None:
        """Replace ``owner.name`` with ``make(original)``, which takes the original's name,
        documentation and signature (see keep_identity); remember the original."""
        original = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else _MISSING
        if original is _MISSING:
            original = getattr(owner, name)
        setattr(owner, name, keep_identity(make(original), original, owner, name))
        self._saved.append((owner, name, original))

    def original(self, owner: Any, name: str) -> Any:
        for saved_owner, saved_name, original in self._saved:
            if saved_owner is owner and saved_name == name:
                return original
        return getattr(owner, name)

    def restore_all(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)
