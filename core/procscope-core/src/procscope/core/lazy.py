"""Names of a package imported at their first use (PEP 562), to keep its import cheap."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (not typing's: every procscope package imports this module)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def lazy_attributes(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each attribute to the
    module (absolute) it comes from; it is imported at the first access and kept."""

    def get_attribute(attribute: str) -> Any:
        module = names.get(attribute)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {attribute!r}")
        __import__(module)  # (importlib.import_module, without importing importlib)
        value = getattr(sys.modules[module], attribute)
        setattr(sys.modules[package], attribute, value)
        return value

    return get_attribute
