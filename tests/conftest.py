"""Shared test set-up: internal errors of procscope must fail tests, not hide; and each
test starts with this process's loss counters at zero."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Set for the whole session, so child processes started by tests inherit it too.
os.environ["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
# `procscope run` caches its check of the entry points under $XDG_CACHE_HOME/procscope/:
# the tests' runs keep theirs in a folder of this session, not in the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="procscope-tests-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(autouse=True)
def losses_of_this_test_only() -> Iterator[None]:
    """The loss counters belong to the whole process (a pytest worker runs many tests),
    and a trace DB written in it stores them: a test that loses records on purpose would
    make a later test's DB say 'recording incomplete'."""
    from procscope.core import losses

    def reset() -> None:
        counters = losses._here()
        with counters.lock:
            counters.by_reason.clear()

    reset()
    yield
    reset()


@pytest.fixture(scope="session")
def big_db() -> str:
    """The path of a realistic 1,000,000-span trace DB (benchmarks/tracedb/big_db.py),
    built once per schema and generator version into the system temp dir (about a
    minute), then shared by every test and worker. Read it only: it is never rebuilt."""
    import importlib.util

    source = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "tracedb", "big_db.py")
    spec = importlib.util.spec_from_file_location("procscope_bench_big_db", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.cached_big_db())


@pytest.fixture(scope="session")
def instrumented_run() -> Any:
    """``run(provider, work)``: ``work(tracer)`` with procscope's instrumentors on for
    ``provider`` alone (every span kind: spans="all"), from an empty context (a get
    leaves its message's context attached to the thread, docs/messaging.md, which would
    make a later run's first send its child), then flushed and shut down."""
    from opentelemetry import context

    from procscope.instrumentation.lifecycle import LifecycleInstrumentor
    from procscope.instrumentation.messaging import MessagingInstrumentor
    from procscope.instrumentation.state import StateInstrumentor

    instrumentors = (MessagingInstrumentor, LifecycleInstrumentor, StateInstrumentor)

    def run(provider: Any, work: Callable[[Any], None]) -> None:
        for instrumentor in instrumentors:
            instrumentor().instrument(tracer_provider=provider, spans="all")
        token = context.attach(context.Context())
        try:
            work(provider.get_tracer("tests.recorded"))
            provider.force_flush()
        finally:
            context.detach(token)
            for instrumentor in instrumentors:
                instrumentor().uninstrument()
            provider.shutdown()

    return run
