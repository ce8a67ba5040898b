"""``procscope export``: a recorded run as a file other tools open.

* ``perfetto``: a Perfetto TrackEvent trace (``_perfetto``), for ui.perfetto.dev;
* ``otlp-json``: one OTLP JSON ExportTraceServiceRequest (``_otlp_json``), for Jaeger's
  UI upload and otel-tui.

Both stream: spans are read from the DB page by page and written as they come. The file
appears whole or not at all: it is written to a temporary file beside the target and
renamed over it at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._otlp_json import write_otlp_json
from ._perfetto import write_perfetto
from ._source import iter_spans

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

FORMATS = ("perfetto", "otlp-json")

__all__ = ["FORMATS", "export"]


def export(
    db: TraceDB,
    fmt: str,
    path: str,
    where: str = "",
    params: Sequence[Any] = (),
    process_names: Mapping[int, str] | None = None,
) -> dict[str, int]:
    """Write the spans matching ``where`` (SQL over ``spans s``; all when empty) to
    ``path`` in format ``fmt``, atomically; returns what was written, counted.
    ``process_names`` (pid -> name) names Perfetto's process tracks.

    Raises ``ValueError`` for an unknown format and ``OSError`` when the file cannot be
    written (nothing is left behind then)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    target = os.path.abspath(path)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=os.path.dirname(target)
    )
    try:
        spans = iter_spans(db, where, params)
        if fmt == "perfetto":
            with os.fdopen(handle, "wb", buffering=1 << 20) as out:
                counts = write_perfetto(spans, out, process_names)
        else:
            with os.fdopen(handle, "w", encoding="utf-8", buffering=1 << 20) as out:
                counts = {"spans": write_otlp_json(spans, out, db.conn)}
        # mkstemp makes the file 0600; the export is an ordinary file of the user's.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return counts
