"""Reading a trace DB span by span, in start order, without holding it all in memory.

Spans come in pages (keyset pagination on ``(start_ns, span_pk)``, which the DB's
``spans_start`` index serves in order), each page with its events and links attached by
the trace DB's own query helpers. A page is dropped once its spans have been written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from procscope.exporters.tracedb._query import (
    SPAN_COLUMNS,
    SPAN_FROM,
    SpanRecord,
    attach_events_and_links,
    span_from_row,
)

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

PAGE = 2000


def iter_spans(
    db: TraceDB, where: str = "", params: Sequence[Any] = (), *, page: int = PAGE
) -> Iterator[SpanRecord]:
    """Every span matching ``where`` (SQL over ``spans s``), by start time, with its
    events and links."""
    base = f"SELECT {SPAN_COLUMNS} FROM {SPAN_FROM} WHERE "
    extra = f" AND ({where})" if where else ""
    after: tuple[int, int] | None = None
    while True:
        if after is None:
            sql = base + "1" + extra
            args: list[Any] = list(params)
        else:
            sql = base + "(s.start_ns > ? OR (s.start_ns = ? AND s.span_pk > ?))" + extra
            args = [after[0], after[0], after[1], *params]
        rows = db.conn.execute(
            sql + f" ORDER BY s.start_ns, s.span_pk LIMIT {int(page)}", args
        ).fetchall()
        if not rows:
            return
        spans = [span_from_row(row) for row in rows]
        attach_events_and_links(db.conn, spans)
        yield from spans
        last = spans[-1]
        after = (last.start_ns, last.span_pk)
        if len(rows) < page:
            return
