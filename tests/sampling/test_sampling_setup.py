"""procscope.setup() in tail mode: PROCSCOPE_SAMPLING=tail, wiring, and a 1% program end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from procscope._pipeline import build_processors
from procscope.core import head_sampling
from procscope.core.settings import SettingWarning, resolve
from procscope.processors.sampling import TailSamplingProcessor


def shut(processors) -> None:
    for processor in processors:
        processor.shutdown()


def test_head_mode_is_the_default_and_adds_no_tail_processor(monkeypatch, live_rate) -> None:
    """Without PROCSCOPE_SAMPLING, build_processors makes plain batch processors only."""
    settings = resolve(exporter="console", sample_rate=0.1, environ={})
    processors = build_processors(settings)
    try:
        assert settings.sampling == "head"
        assert [type(p) for p in processors] == [BatchSpanProcessor]
        assert not head_sampling.records_every_trace()
    finally:
        shut(processors)


def test_tail_mode_puts_one_tail_processor_in_front_of_every_exporter(
    monkeypatch, live_rate
) -> None:
    """PROCSCOPE_SAMPLING=tail: one TailSamplingProcessor feeds the batch processors."""
    settings = resolve(exporter="console", environ={"PROCSCOPE_SAMPLING": "TAIL"})
    processors = build_processors(settings)
    try:
        assert [type(p) for p in processors] == [TailSamplingProcessor]
        assert isinstance(processors[0].next_processor, BatchSpanProcessor)
        assert head_sampling.records_every_trace()
        live_rate(0.0)
        assert head_sampling.should_record()  # the head no longer drops anything
    finally:
        shut(processors)


def test_bad_sampling_mode_warns_and_uses_head(monkeypatch, live_rate) -> None:
    """A bad PROCSCOPE_SAMPLING gives one SettingWarning naming it and the value; head is used."""
    with pytest.warns(SettingWarning, match="PROCSCOPE_SAMPLING.*'sometimes'"):
        settings = resolve(exporter="console", environ={"PROCSCOPE_SAMPLING": "sometimes"})
    processors = build_processors(settings)
    try:
        assert [type(p) for p in processors] == [BatchSpanProcessor]
    finally:
        shut(processors)


PROGRAM = """
import procscope
from opentelemetry import trace
from opentelemetry.trace import StatusCode

procscope.setup(sample_rate=0.01, exporter="console", level="minimal")
tracer = trace.get_tracer("app")
for i in range(3000):
    with tracer.start_as_current_span(f"job{i}") as job:
        with tracer.start_as_current_span("step") as step:
            if i % 100 == 7:
                step.set_status(StatusCode.ERROR, "failed")
procscope.configure(sample_rate=1.0)
for i in range(20):
    with tracer.start_as_current_span(f"after{i}"):
        pass
procscope.shutdown()
"""


def console_spans(stdout: str) -> list[dict]:
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while (start := stdout.find("{", index)) >= 0:
        try:
            obj, index = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj:
            spans.append(obj)
    return spans


def test_tail_mode_at_one_percent_keeps_every_error_trace(tmp_path: Path) -> None:
    """A real program at sample_rate=0.01, tail mode: all 30 error traces kept, ~1% of others."""
    (tmp_path / "app.py").write_text(textwrap.dedent(PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env.update(PROCSCOPE_SAMPLING="tail", PROCSCOPE_RAISE_INTERNAL_ERRORS="1")
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spans = console_spans(result.stdout)
    roots = {s["name"] for s in spans if s["parent_id"] is None}
    errors = {f"job{i}" for i in range(3000) if i % 100 == 7}
    assert errors <= roots
    others = {r for r in roots if r.startswith("job")} - errors
    assert 5 <= len(others) <= 80  # about 1% of 2970: a binomial around 30
    # After configure(sample_rate=1.0), the tail keeps everything: the live rate is read.
    assert {f"after{i}" for i in range(20)} <= roots
    probabilities = {s["name"]: s["attributes"]["procscope.sampling.probability"] for s in spans}
    assert {probabilities[name] for name in errors} == {1.0}
    assert {round(probabilities[name], 6) for name in others} == {0.01}


THREADS_PROGRAM = """
import threading
import procscope

procscope.setup(sample_rate=0.3, exporter="console", level="full")

def work(index):
    if index % 30 == 0:
        raise RuntimeError(f"thread {index} failed")

for i in range(300):
    t = threading.Thread(target=work, args=(i,), name=f"w{i}")
    t.start()
    t.join()
procscope.shutdown()
"""


def run_threads_program(tmp_path: Path, **env_overrides: str) -> list[dict]:
    (tmp_path / "threads.py").write_text(textwrap.dedent(THREADS_PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env.update(PROCSCOPE_RAISE_INTERNAL_ERRORS="1", PROCSCOPE_LIFECYCLE_SPANS="all")
    env.update(env_overrides)
    result = subprocess.run(
        [sys.executable, "threads.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # (not the flight recorder's dumps of the failed threads' last seconds: those are
    # records of unsampled work, docs/flight-recorder.md)
    return [s for s in console_spans(result.stdout) if s["name"].startswith("thread ")
            and not s["attributes"].get("procscope.flight.recorded")]


def test_head_mode_gate_and_sampler_mark_instrumented_roots(tmp_path: Path) -> None:
    """Head mode at 0.3: ~30% of real thread spans, each with ot=th:..;rv:.. and probability 0.3."""
    spans = run_threads_program(tmp_path)
    assert 45 <= len(spans) <= 135  # binomial(300, 0.3): mean 90, sd 8
    threshold = head_sampling.threshold_for(0.3)
    for span in spans:
        assert span["attributes"]["procscope.sampling.probability"] == 0.3
        ot = span["context"]["trace_state"]
        th, rv = head_sampling.parse_ot(ot.split("value=")[1].rstrip("}']\""))
        assert th == threshold and rv >= threshold


def test_tail_mode_keeps_every_failed_thread(tmp_path: Path) -> None:
    """Tail mode at 0.3: all 10 failed threads kept, with probability 1; ~30% of the others."""
    spans = run_threads_program(tmp_path, PROCSCOPE_SAMPLING="tail")
    failed = [s for s in spans if s["status"]["status_code"] == "ERROR"]
    assert sorted(s["name"] for s in failed) == sorted(f"thread w{i}" for i in range(0, 300, 30))
    assert {s["attributes"]["procscope.sampling.probability"] for s in failed} == {1.0}
    others = [s for s in spans if s["status"]["status_code"] != "ERROR"]
    assert 45 <= len(others) <= 135
