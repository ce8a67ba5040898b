"""OTLP export that cannot stall or flood the program when the endpoint is down.

The OTLP exporters retry each batch with backoff until their timeout
(OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default) and log every retry. With the endpoint
unreachable that means a warning every few seconds and, at exit, a wait of one timeout
per batch still queued. Wrapped here, an outage gives one warning, and after a failed
batch the following ones fail at once for a short while, so the program's exit waits for
at most one exporter timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from procscope.core.guard import logger

# The loggers the OTLP trace exporters (and the HTTP client they share) report through.
OTLP_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)

# After a failed export, batches fail at once for this long instead of each waiting
# for a full exporter timeout against an endpoint that just proved unreachable.
FAIL_FAST_SECONDS = 5.0

_exporting = threading.local()


class _QuietWhileWrapped(logging.Filter):
    """Drops the OTLP exporters' own records while our wrapper is the caller.

    Thread-local, because the exporter runs on the batch processor's worker thread and
    other users of these loggers must still be heard.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_exporting, "quiet", False)


_filter = _QuietWhileWrapped()
_filter_lock = threading.Lock()


def _install_filter() -> None:
    with _filter_lock:
        for name in OTLP_LOGGERS:
            log = logging.getLogger(name)
            if _filter not in log.filters:
                log.addFilter(_filter)


class QuietOTLPSpanExporter(SpanExporter):
    """Wraps an OTLP span exporter: one warning per outage, bounded waits."""

    def __init__(self, inner: SpanExporter, protocol: str) -> None:
        self._inner = inner
        self._protocol = protocol
        self._endpoint = str(getattr(inner, "_endpoint", "the OTLP endpoint"))
        self._failing_until = 0.0
        self._in_outage = False
        _install_filter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if time.monotonic() < self._failing_until:
            return SpanExportResult.FAILURE
        _exporting.quiet = True
        try:
            result = self._inner.export(spans)
        except Exception:  # noqa: BLE001 -- an exporter bug must not reach the worker
            result = SpanExportResult.FAILURE
        finally:
            _exporting.quiet = False
        if result is SpanExportResult.SUCCESS:
            if self._in_outage:
                self._in_outage = False
                logger.info("procscope: OTLP endpoint %s reachable again", self._endpoint)
            return result
        self._failing_until = time.monotonic() + FAIL_FAST_SECONDS
        if not self._in_outage:
            self._in_outage = True
            logger.warning(
                "procscope: cannot export spans over OTLP (%s) to %s; spans are dropped "
                "until it answers (this warning is given once per outage)",
                self._protocol,
                self._endpoint,
            )
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def make_otlp_exporter(protocol: str) -> SpanExporter:
    """The standard OTLP span exporter for ``protocol``, configured by OTEL_EXPORTER_OTLP_*."""
    inner: Any
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        inner = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcOTLPSpanExporter,
        )

        inner = GrpcOTLPSpanExporter()
    return QuietOTLPSpanExporter(inner, protocol)
