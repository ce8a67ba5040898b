"""Fixtures for the trace DB tests: finished spans built directly, and DB paths."""

from __future__ import annotations

import logging
import os
import random
import subprocess
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

RESOURCE = Resource.create({"service.name": "tracedb-tests", "process.pid": os.getpid()})
SCOPE = InstrumentationScope("tests.tracedb", "1.2.3")


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))


def build_span(
    name: str,
    *,
    trace_id: int,
    span_id: int,
    parent_id: int | None = None,
    start_ns: int = 1_700_000_000_000_000_000,
    duration_ns: int = 1_000_000,
    attributes: dict | None = None,
    events: list[tuple[str, int, dict]] | None = None,
    links: list[tuple[int, int, dict]] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    error: str | None = None,
    resource: Resource = RESOURCE,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=_context(trace_id, span_id),
        parent=_context(trace_id, parent_id) if parent_id is not None else None,
        resource=resource,
        attributes=attributes or {},
        events=[Event(n, a, timestamp=t) for n, t, a in (events or [])],
        links=[Link(_context(t, s), a) for t, s, a in (links or [])],
        kind=kind,
        status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
        start_time=start_ns,
        end_time=start_ns + duration_ns,
        instrumentation_scope=SCOPE,
    )


def build_traces(
    count: int,
    spans_per_trace: int = 4,
    *,
    seed: int = 0,
    start_ns: int = 1_700_000_000 * 10**9,
    name: str = "job",
) -> list[ReadableSpan]:
    """``count`` traces, each a root with children, 1 ms apart; ids from ``seed``."""
    rng = random.Random(seed)
    spans = []
    for t in range(count):
        trace_id = rng.getrandbits(128) | 1
        root_id = rng.getrandbits(64) | 1
        t0 = start_ns + t * 1_000_000
        for c in range(1, spans_per_trace):
            spans.append(
                build_span(
                    f"step {c}",
                    trace_id=trace_id,
                    span_id=rng.getrandbits(64) | 1,
                    parent_id=root_id,
                    start_ns=t0 + c * 1000,
                    duration_ns=500,
                    attributes={"step": c},
                )
            )
        spans.append(
            build_span(
                f"{name} {t}",
                trace_id=trace_id,
                span_id=root_id,
                start_ns=t0,
                duration_ns=spans_per_trace * 1000,
            )
        )
    return spans


@pytest.fixture
def make_span() -> Callable[..., ReadableSpan]:
    """Build one finished span (keyword arguments as build_span)."""
    return build_span


@pytest.fixture
def make_traces() -> Callable[..., list[ReadableSpan]]:
    """Build whole traces of finished spans."""
    return build_traces


@pytest.fixture
def db_path(tmp_path) -> str:
    """A fresh DB path in the test's own folder."""
    return str(tmp_path / "trace.db")


@pytest.fixture
def procscope_warnings(caplog) -> Callable[[], list[logging.LogRecord]]:
    """The warnings logged on the 'procscope' logger so far."""
    caplog.set_level(logging.WARNING, logger="procscope")
    return lambda: [
        r for r in caplog.records if r.name == "procscope" and r.levelno == logging.WARNING
    ]


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str], str]]:
    """Mount a real tmpfs of a given size (e.g. "256k") under tmp_path; skip if not allowed."""
    mounted: list[str] = []

    def mount(size: str) -> str:
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}"
            )
        mounted.append(str(target))
        return str(target)

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", target], check=False)
