"""procscope's lifecycle instrumentor: processes, threads and asyncio tasks, who started
whom, and how each lived and ended. See docs/lifecycle.md."""

from __future__ import annotations

from ._instrumentor import LifecycleInstrumentor
from ._runtime import ENV_SPANS

__all__ = ["ENV_SPANS", "LifecycleInstrumentor"]
