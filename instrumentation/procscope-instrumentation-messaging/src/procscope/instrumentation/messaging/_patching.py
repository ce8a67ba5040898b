"""Patching methods on classes, reversibly and idempotently.

Each family module registers (owner, attribute, replacement) with a :class:`Patcher`;
``apply`` saves what was there and installs the replacement, ``restore`` puts back the
saved object only if ours is still in place (another tool may have wrapped on top of us;
then removing ours would remove theirs too, so we leave it and our wrapper stays inert).
"""

from __future__ import annotations

from typing import Any

from procscope.core.patched import keep_identity

_MISSING = object()


class Patcher:
    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any, Any]] = []

    def patch(self, owner: Any, attribute: str, replacement: Any) -> None:
        original = owner.__dict__.get(attribute, _MISSING)
        if original is not _MISSING:
            # A replacement takes the original's name, documentation and signature (an
            # addition, such as __reduce_ex__ on a queue class, has no original to copy).
            keep_identity(replacement, original, owner, attribute)
        setattr(owner, attribute, replacement)
        self._saved.append((owner, attribute, original, replacement))

    def patch_item(self, mapping: dict[Any, Any], key: Any, replacement: Any) -> None:
        """The same for an entry of a dictionary (a registry of reducers)."""
        self._saved.append((mapping, key, mapping.get(key, _MISSING), replacement))
        mapping[key] = replacement

    def restore(self) -> None:
        while self._saved:
            owner, attribute, original, replacement = self._saved.pop()
            if isinstance(owner, dict):
                if owner.get(attribute, _MISSING) is replacement:
                    if original is _MISSING:
                        del owner[attribute]
                    else:
                        owner[attribute] = original
                continue
            if owner.__dict__.get(attribute, _MISSING) is not replacement:
                continue
            if original is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


def original(owner: Any, attribute: str) -> Any:
    """The attribute as the class defines it now (before we patch it)."""
    return owner.__dict__[attribute]
