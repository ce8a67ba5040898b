"""The process tree from lifecycle spans.

Owned by the engineer of the lifecycle instrumentor (procscope-instrumentation-lifecycle):
they rewrite this module (and may adjust ``TraceDB.processes``). Until then: no rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def processes(conn: sqlite3.Connection) -> list[Any]:
    """One entry per recorded process: pid, parent, name, start method, start, end, exit."""
    return []
