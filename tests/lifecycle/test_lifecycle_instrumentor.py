"""Switching the instrumentor on and off: every patched name restored, options checked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import pool, popen_fork, popen_forkserver, process
from typing import Any

import pytest

from procscope.core.settings import SettingWarning
from procscope.instrumentation.lifecycle import ENV_SPANS, LifecycleInstrumentor

PATCHED = [
    (threading.Thread, "start"),
    (threading.Thread, "_bootstrap_inner"),
    (ThreadPoolExecutor, "submit"),
    (asyncio.BaseEventLoop, "create_task"),
    (process.BaseProcess, "start"),
    (process.BaseProcess, "_bootstrap"),
    (popen_fork.Popen, "poll"),
    (popen_forkserver.Popen, "poll"),
    (pool.Pool, "apply_async"),
    (pool.Pool, "_map_async"),
    (pool.Pool, "imap"),
    (pool.Pool, "imap_unordered"),
    (ProcessPoolExecutor, "submit"),
    (os, "fork"),
    (os, "waitpid"),
    (os, "_exit"),
    (subprocess.Popen, "_execute_child"),
    (subprocess.Popen, "_handle_exitstatus"),
]


def _current() -> list[Any]:
    return [
        getattr(owner, name) if not isinstance(owner, type) else owner.__dict__[name]
        for owner, name in PATCHED
    ]


def test_uninstrument_restores_every_patched_name_by_identity(instrument: Any) -> None:
    """After uninstrument, each patched attribute is the very object that was there before."""
    before = _current()
    instrument()
    during = _current()
    assert all(a is not b for a, b in zip(before, during)), "something was not patched"
    LifecycleInstrumentor().instrument()  # a second instrument is a no-op
    assert all(a is b for a, b in zip(during, _current()))
    LifecycleInstrumentor().uninstrument()
    after = _current()
    changed = [PATCHED[i] for i, (a, b) in enumerate(zip(before, after)) if a is not b]
    assert changed == []


def test_bad_spans_setting_warns_once_and_falls_back(
    instrument: Any, monkeypatch: pytest.MonkeyPatch, thread_failures: list[Any]
) -> None:
    """PROCSCOPE_LIFECYCLE_SPANS=bogus: one SettingWarning naming it; the default (all)."""
    monkeypatch.setenv(ENV_SPANS, "bogus")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        memory = instrument()
    messages = [str(w.message) for w in caught if w.category is SettingWarning]
    assert len(messages) == 1 and ENV_SPANS in messages[0] and "bogus" in messages[0]
    for target in (lambda: None, lambda: 1 / 0):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    spans = memory.spans("thread")
    assert len(spans) == 2
    assert not any(s.attributes.get("procscope.lifecycle.error_only") for s in spans)


def test_spans_keyword_wins_over_the_environment(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """instrument(spans="all") beats PROCSCOPE_LIFECYCLE_SPANS=errors."""
    monkeypatch.setenv(ENV_SPANS, "errors")
    memory = instrument(spans="all")
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    assert len(memory.spans("thread")) == 1


def test_environment_chooses_spans_for_every_thread(
    instrument: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROCSCOPE_LIFECYCLE_SPANS=all without a keyword: a span for a thread that ends well."""
    monkeypatch.setenv(ENV_SPANS, "all")
    memory = instrument()
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    assert len(memory.spans("thread")) == 1


def test_the_program_sees_no_difference_in_a_subprocess_run(memory: Any) -> None:
    """subprocess.run under instrumentation: same output and return code, a span pair."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.stdout, done.returncode) == ("hi\n", 3)
    spans = {s.attributes["procscope.lifecycle.role"]: s for s in memory.spans("subprocess")}
    assert spans["spawn"].attributes["process.pid"] == spans["reap"].attributes["process.pid"]
    assert spans["reap"].attributes["process.exit.code"] == 3
    assert spans["spawn"].attributes["process.command_args"][0] == sys.executable


def test_command_arguments_are_left_out_when_content_capture_is_off(memory: Any) -> None:
    """capture_content off: the subprocess spawn span names the program, not its arguments."""
    from procscope.core import shared_state

    live = shared_state.settings()
    live.capture_content = False
    try:
        subprocess.run(["sh", "-c", "exit 0", "--password=hunter2"], check=True)
    finally:
        live.capture_content = True
    (spawn,) = [s for s in memory.spans("subprocess") if s.name == "spawn sh"]
    assert list(spawn.attributes["process.command_args"]) == ["sh"]


def test_exit_flush_is_skipped_only_when_no_span_waits_for_export() -> None:
    """nothing_to_flush(): true only while every processor is an SDK batch processor with
    an empty queue; a queued span, or a processor of unknown content, means a flush."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from procscope.instrumentation.lifecycle import _runtime

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    LifecycleInstrumentor().instrument(tracer_provider=provider)
    try:
        assert _runtime.nothing_to_flush()
        provider.get_tracer("t").start_span("waiting").end()
        assert not _runtime.nothing_to_flush()  # one span in the batch queue
        _runtime.flush()
        assert [s.name for s in exporter.get_finished_spans()] == ["waiting"]
        assert _runtime.nothing_to_flush()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        assert not _runtime.nothing_to_flush()
    finally:
        LifecycleInstrumentor().uninstrument()
        provider.shutdown()
