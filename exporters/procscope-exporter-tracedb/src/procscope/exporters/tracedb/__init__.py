"""procscope's trace DB exporter (work in progress)."""

from __future__ import annotations

__all__ = ["TraceDB", "TraceDBSpanExporter"]

from ._exporter import TraceDBSpanExporter
from ._db import TraceDB
