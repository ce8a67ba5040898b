"""The overflow setting and procscope's batch processor: a full queue waits or drops as
the setting says, every span it drops is counted, and the SDK's anonymous
"Queue full, dropping Span." is never logged."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from procscope import SettingWarning
from procscope._batch import make_batch_span_processor
from procscope.core import losses, shared_state
from procscope.core.settings import resolve

from .conftest import clean_environ


class SlowExporter(SpanExporter):
    """Takes ``pause`` seconds per batch (or waits for ``gate``), counting what it got."""

    def __init__(self, pause: float = 0.02, gate: threading.Event | None = None) -> None:
        self.pause = pause
        self.gate = gate
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.pause)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def overflow_policy() -> Iterator[None]:
    live = shared_state.settings()
    before = live.overflow
    yield
    live.overflow = before


def _record(
    exporter: SpanExporter, spans: int, threads: int = 1, queue: int = 64
) -> tuple[int, dict[str, int]]:
    """Make ``spans`` spans on ``threads`` threads behind a small queue; return the
    spans made and this process's new losses by reason."""
    before = losses.lost_by_reason()
    processor = make_batch_span_processor(
        exporter, max_queue_size=queue, max_export_batch_size=16, schedule_delay_millis=5
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("overflow-test")

    def make() -> None:
        for _ in range(spans // threads):
            with tracer.start_as_current_span("work"):
                pass

    workers = [threading.Thread(target=make) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    provider.shutdown()
    after = losses.lost_by_reason()
    return spans, {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _queue_full_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Queue full" in r.getMessage()]


def test_drop_counts_exactly_the_spans_not_exported(
    overflow_policy: None, caplog: pytest.LogCaptureFixture
) -> None:
    """drop: spans made = spans exported + spans counted lost, from 4 threads, and the
    SDK's "Queue full" warning is never logged."""
    shared_state.settings().overflow = "drop"
    exporter = SlowExporter()
    with caplog.at_level(logging.INFO):
        made, lost = _record(exporter, 4000, threads=4)
    assert lost.get(losses.QUEUE_FULL, 0) > 0
    assert exporter.exported + lost[losses.QUEUE_FULL] == made
    assert set(lost) == {losses.QUEUE_FULL}
    assert _queue_full_logged(caplog) == []


def test_wait_loses_nothing(overflow_policy: None, caplog: pytest.LogCaptureFixture) -> None:
    """wait: behind the same slow exporter every span is exported, nothing counted."""
    shared_state.settings().overflow = "wait"
    exporter = SlowExporter()
    with caplog.at_level(logging.INFO):
        made, lost = _record(exporter, 2000, threads=4)
    assert lost == {}
    assert exporter.exported == made
    assert _queue_full_logged(caplog) == []


def test_wait_gives_up_on_a_stalled_exporter_and_counts(
    overflow_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait, the exporter stalled: the first span finding the queue full waits (the bound
    made short here), is dropped and counted; the rest drop at once while the exporter
    takes nothing; the program finishes, and made = exported + lost."""
    from procscope import _batch

    monkeypatch.setattr(_batch, "WAIT_LIMIT_S", 0.2)
    shared_state.settings().overflow = "wait"
    gate = threading.Event()
    exporter = SlowExporter(pause=0.0, gate=gate)
    releaser = threading.Timer(1.0, gate.set)
    releaser.start()
    try:
        made, lost = _record(exporter, 600, queue=32)
    finally:
        gate.set()
        releaser.cancel()
    assert lost.get(losses.QUEUE_FULL, 0) > 0
    assert exporter.exported + lost[losses.QUEUE_FULL] == made


class DeclaredSlowExporter(SlowExporter):
    """Each export takes longer than the wait limit, within what it says it may take."""

    longest_export_s = 2.0


def test_wait_rides_out_an_exporter_slower_than_the_limit_but_working(
    overflow_policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait: an exporter whose batches each take longer than the wait limit, but no
    longer than it declares (the trace DB's longest_export_s), is slow, not stalled:
    every span is exported, nothing counted."""
    from procscope import _batch

    monkeypatch.setattr(_batch, "WAIT_LIMIT_S", 0.05)
    shared_state.settings().overflow = "wait"
    exporter = DeclaredSlowExporter(pause=0.15)
    made, lost = _record(exporter, 200, threads=2, queue=32)
    assert lost == {}
    assert exporter.exported == made


def test_overflow_defaults_follow_the_sample_rate() -> None:
    """Unset: wait at full recall, drop when sampling; given, it is kept either way."""
    assert resolve(environ={}).overflow_policy == "wait"
    assert resolve(sample_rate=0.5, environ={}).overflow_policy == "drop"
    assert resolve(sample_rate=0.5, overflow="wait", environ={}).overflow_policy == "wait"
    assert resolve(environ={"PROCSCOPE_OVERFLOW": "DROP"}).overflow_policy == "drop"


def test_a_bad_overflow_value_warns_once_and_uses_the_default() -> None:
    """A bad value: one SettingWarning naming it, and the default by sample rate."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = resolve(sample_rate=0.25, environ={"PROCSCOPE_OVERFLOW": "sometimes"})
    named = [w for w in caught if issubclass(w.category, SettingWarning)]
    assert len(named) == 1
    assert "PROCSCOPE_OVERFLOW" in str(named[0].message)
    assert "'sometimes'" in str(named[0].message)
    assert settings.overflow is None and settings.overflow_policy == "drop"


PROGRAM = """
import multiprocessing as mp
import os
import procscope
from procscope.core import shared_state

def child(q):
    q.put(shared_state.settings().overflow)

if __name__ == "__main__":
    procscope.setup(exporter="none")
    print("parent", shared_state.settings().overflow, flush=True)
    procscope.configure(sample_rate=0.5)
    print("sampled", shared_state.settings().overflow, flush=True)
    procscope.configure(overflow="wait")
    print("given", shared_state.settings().overflow, flush=True)
    procscope.configure(sample_rate=1.0, overflow="drop")
    for method in ("fork", "spawn"):
        q = mp.get_context(method).Queue()
        p = mp.get_context(method).Process(target=child, args=(q,))
        p.start()
        print(method, q.get(timeout=60), flush=True)
        p.join()
    procscope.shutdown()
"""


def test_a_program_and_its_children_warn_once_and_follow_configure(tmp_path: Path) -> None:
    """PROCSCOPE_OVERFLOW=sometimes: one warning for the whole program (children do not
    warn again); the default follows configure(sample_rate=...) until overflow is given,
    and children (fork, spawn) inherit the policy given."""
    app = tmp_path / "app.py"
    app.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, str(app)],
        env=clean_environ(PROCSCOPE_OVERFLOW="sometimes"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:5] == [
        "parent wait",
        "sampled drop",
        "given wait",
        "fork drop",
        "spawn drop",
    ]
    assert done.stderr.count("PROCSCOPE_OVERFLOW") == 1, done.stderr


def test_configure_with_a_bad_overflow_warns_once_and_keeps_the_policy(tmp_path: Path) -> None:
    """configure(overflow="sometimes"): one SettingWarning naming the keyword; the policy
    in force (here the default by sample rate) stays."""
    app = tmp_path / "app.py"
    app.write_text(
        "import procscope\n"
        "from procscope.core import shared_state\n"
        "procscope.setup(exporter='none', sample_rate=0.5)\n"
        "procscope.configure(overflow='sometimes')\n"
        "print(shared_state.settings().overflow)\n"
        "procscope.shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, str(app)],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "drop"
    assert done.stderr.count("SettingWarning") == 1, done.stderr
    assert "setting overflow: 'sometimes'" in done.stderr
