"""What a span costs the thread that ends it in the batch processor: with room in the
queue, and when the queue is full (issue 12, item 4), the SDK's ``BatchSpanProcessor``
against procscope's (``src/procscope/_batch.py``, ``overflow=drop``).

    python benchmarks/foundation/bench_overflow.py [--rounds N]

The SDK's processor logs ``Queue full, dropping Span.`` for every span it drops (its
duplicate filter then discards the record) and counts nothing; procscope's counts the
span (``procscope.core.losses``) and logs nothing. Rounds alternate between the two;
medians of microseconds per ``emit`` (the call ``on_end`` makes).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from procscope._batch import make_batch_span_processor
from procscope.core import shared_state


class Null(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Stuck(SpanExporter):
    """Takes its first batch and never returns: the queue stays full."""

    def export(self, spans: Any) -> SpanExportResult:
        time.sleep(3600)
        return SpanExportResult.SUCCESS


def _per_emit(processor: Any, span: Any, count: int) -> float:
    emit = processor._batch_processor.emit
    started = time.perf_counter()
    for _ in range(count):
        emit(span)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    # As in a program that configured no logging: the SDK's warning record is made and
    # filtered as it would be there, and printed nowhere.
    logging.getLogger().addHandler(logging.NullHandler())
    shared_state.settings().overflow = "drop"
    with TracerProvider().get_tracer("bench").start_as_current_span("span") as span:
        pass
    makers = {
        "SDK BatchSpanProcessor": lambda e, **k: BatchSpanProcessor(e, **k),
        "procscope (drop)": make_batch_span_processor,
    }
    room: dict[str, list[float]] = {name: [] for name in makers}
    full: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(rounds):
        for name, make in makers.items():
            roomy = make(Null(), max_queue_size=10**7, schedule_delay_millis=10**7)
            room[name].append(_per_emit(roomy, span, 100_000))
            roomy._batch_processor._queue.clear()
            roomy.shutdown()
            stuck = make(Stuck(), max_queue_size=64, max_export_batch_size=64)
            _per_emit(stuck, span, 200)  # the worker takes one batch; the queue fills
            full[name].append(_per_emit(stuck, span, 20_000))
    print(f"{'processor':<24} {'with room (us)':>15} {'queue full (us)':>16}")
    for name in makers:
        print(
            f"{name:<24} {statistics.median(room[name]):>15.2f} "
            f"{statistics.median(full[name]):>16.2f}"
        )


if __name__ == "__main__":
    main()
