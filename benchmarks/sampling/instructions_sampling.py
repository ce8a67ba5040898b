"""Instructions the tail processor adds per span, counted by callgrind (repeatable, unlike time).

Not run by ``make bench`` (it needs valgrind and takes minutes). One run feeds SDK-made
spans, in the order the SDK starts and ends them, through a processor's on_start/on_end:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/sampling/instructions_sampling.py CONFIG SPANS TRACES REPS

CONFIG is ``base`` (a processor that only counts, the floor any processor pays) or
``tail`` (TailSamplingProcessor with the default policy at 1%). The spans for 3 * TRACES
traces are made first; then the first REPS * TRACES traces go through the processor. The
difference between REPS=3 and REPS=1, divided by 2 * TRACES * SPANS, is the processor's
cost per span (everything else is the same in both runs); ``--all`` prints the table:

    .venv/bin/python benchmarks/sampling/instructions_sampling.py --all
"""

from __future__ import annotations

import gc
import re
import subprocess
import sys
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from procscope.processors.sampling import TailSamplingProcessor, default_policy


class Counting(SpanProcessor):
    """The cheapest processor: counts what ends."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class Recording(SpanProcessor):
    """Records every start and end, in order, to replay them."""

    def __init__(self) -> None:
        self.events: list[tuple[bool, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.events.append((False, span))

    def on_end(self, span: ReadableSpan) -> None:
        self.events.append((True, span))


def made_events(spans_per_trace: int, traces: int) -> list[tuple[bool, Any]]:
    recording = Recording()
    provider = TracerProvider()
    provider.add_span_processor(recording)
    start_span = provider.get_tracer("instructions").start_as_current_span
    for _ in range(traces):
        with start_span("root"):
            for _ in range(spans_per_trace - 1):
                with start_span("child"):
                    pass
    return recording.events


def replay(config: str, spans_per_trace: int, traces: int, reps: int) -> None:
    events = made_events(spans_per_trace, traces * 3)
    gc.disable()
    processor: SpanProcessor = Counting()
    if config == "tail":
        processor = TailSamplingProcessor(
            Counting(), default_policy(0.01), max_buffered_spans=10**6
        )
    on_start, on_end = processor.on_start, processor.on_end
    for ended, span in events[: traces * reps * spans_per_trace * 2]:
        if ended:
            on_end(span)
        else:
            on_start(span, None)


def count(config: str, spans_per_trace: int, traces: int, reps: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        config,
        str(spans_per_trace),
        str(traces),
        str(reps),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : (\d+)", output)
    assert match, output
    return int(match.group(1))


def table() -> None:
    print("instructions per span (callgrind), default policy at 1%")
    for spans_per_trace in (1, 2, 5, 20):
        traces = 2000 // spans_per_trace
        per_span = {}
        for config in ("base", "tail"):
            delta = count(config, spans_per_trace, traces, 3) - count(
                config, spans_per_trace, traces, 1
            )
            per_span[config] = delta // (2 * traces * spans_per_trace)
        added = per_span["tail"] - per_span["base"]
        print(
            f"  traces of {spans_per_trace:2d} spans: counting processor {per_span['base']:6,d},"
            f" tail processor {per_span['tail']:6,d}, added {added:6,d}"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--all"]:
        table()
    else:
        replay(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
