"""State histories of traced objects, from the state instrumentor's spans and events.

Owned by the engineer of the state instrumentor (procscope-instrumentation-state): they
rewrite this module (and may adjust ``TraceDB.state_history``/``state_at``). Until then:
no rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def state_history(conn: sqlite3.Connection, name: str) -> list[Any]:
    """Every recorded state change of the object named ``name``, in time order."""
    return []


def state_at(conn: sqlite3.Connection, name: str, at_ns: int) -> dict[str, Any] | None:
    """The state of the object named ``name`` at ``at_ns``, or None if unknown."""
    return None
