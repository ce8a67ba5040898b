"""procscope's tail-sampling span processor (work in progress)."""

from __future__ import annotations

from opentelemetry.sdk.trace import SpanProcessor

__all__ = ["TailSamplingProcessor"]


class TailSamplingProcessor(SpanProcessor):
    pass
