"""Messages through queues and pipes, from messaging spans.

Owned by the engineer of the messaging instrumentor (procscope-instrumentation-messaging):
they rewrite this module (and may adjust ``TraceDB.messages``). Until then: no rows.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def messages(
    conn: sqlite3.Connection,
    queue: str | None = None,
    sender: str | None = None,
    receiver: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    limit: int | None = None,
) -> list[Any]:
    """Each message with its producer and consumer spans, processes and threads."""
    return []
