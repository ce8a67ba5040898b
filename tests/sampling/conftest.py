"""Fixtures for the sampling tests: real SDK providers, in-memory exporters, live settings."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from procscope.core import head_sampling, shared_state
from procscope.processors.sampling import TailSamplingProcessor


class SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator, so that rate tests are repeatable."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


class Pipeline:
    """A real TracerProvider whose only processor is a TailSamplingProcessor."""

    def __init__(self, policy: Any = None, seed: int | None = None, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.processor = TailSamplingProcessor(
            SimpleSpanProcessor(self.exporter), policy, **options
        )
        kwargs: dict[str, Any] = {}
        if seed is not None:
            kwargs["id_generator"] = SeededIds(seed)
        self.provider = TracerProvider(**kwargs)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests.sampling")

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def kept_trace_ids(self) -> set[int]:
        return {s.context.trace_id for s in self.spans()}

    def shutdown(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def pipeline() -> Iterator[Callable[..., Pipeline]]:
    """Make pipelines; every one is shut down (thread stopped) when the test ends."""
    made: list[Pipeline] = []

    def make(policy: Any = None, seed: int | None = None, **options: Any) -> Pipeline:
        made.append(Pipeline(policy, seed, **options))
        return made[-1]

    yield make
    for p in made:
        p.shutdown()


@pytest.fixture
def live_rate() -> Iterator[Callable[[float], None]]:
    """Set the process's live sample rate (as procscope.configure does); restored afterwards."""
    live = shared_state.settings()
    saved_rate, saved_tail = live.sample_rate, head_sampling.records_every_trace()

    def set_rate(rate: float) -> None:
        live.sample_rate = rate

    yield set_rate
    live.sample_rate = saved_rate
    head_sampling.set_records_every_trace(saved_tail)
    head_sampling.take_root_randomness()  # leave no hand-over behind for the next test
