"""procscope's lifecycle instrumentor: processes, threads and asyncio tasks, who started
whom, and how each lived and ended. See docs/lifecycle.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._runtime import ENV_SPANS

if TYPE_CHECKING:
    from ._instrumentor import LifecycleInstrumentor

__all__ = ["ENV_SPANS", "LifecycleInstrumentor"]


def __getattr__(name: str) -> Any:
    # Imported at first use: its base class costs tens of milliseconds of imports that
    # procscope.setup(), which switches the plugin through ._switch, does not need.
    if name == "LifecycleInstrumentor":
        from ._instrumentor import LifecycleInstrumentor

        return LifecycleInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
