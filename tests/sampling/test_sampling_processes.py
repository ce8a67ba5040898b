"""The same trace gets the same decision in every process (fork, spawn, forkserver, subprocess)."""

from __future__ import annotations

import json
import multiprocessing
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

# Run in each process: the spans of a multi-process trace, as a child process makes them
# (a local root under the remote parent it received), through a real tail processor.
WORKER = '''
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from procscope._sampler import AdjustableRateSampler
from procscope.processors.sampling import ProbabilisticPolicy, TailSamplingProcessor


def decide(carriers, rate):
    """Kept trace ids (as hex) of the tail processor, and the head sampler's root decisions."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(
        TailSamplingProcessor(SimpleSpanProcessor(exporter), ProbabilisticPolicy(rate))
    )
    tracer = provider.get_tracer("worker")
    propagator = TraceContextTextMapPropagator()
    for carrier in carriers:
        with tracer.start_as_current_span("work", context=propagator.extract(carrier)):
            with tracer.start_as_current_span("step"):
                pass
    provider.shutdown()
    tail = sorted({format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()})
    sampler = AdjustableRateSampler(rate)
    head = sorted(
        c["traceparent"][3:35]
        for c in carriers
        if sampler.should_sample(None, int(c["traceparent"][3:35], 16), "r").decision.is_sampled()
    )
    return tail, head


def run(queue, carriers, rate):
    queue.put(decide(carriers, rate))
'''


def carriers(count: int, seed: int) -> list[dict[str, str]]:
    """W3C trace-context carriers; half carry explicit randomness (rv) in their tracestate."""
    rng = random.Random(seed)
    result = []
    for i in range(count):
        carrier = {
            "traceparent": f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64) | 1:016x}-01"
        }
        if i % 2:
            carrier["tracestate"] = f"ot=rv:{rng.getrandbits(56):014x}"
        result.append(carrier)
    return result


@pytest.fixture
def worker_module(tmp_path: Path, monkeypatch):
    """The worker code as an importable module (spawn and forkserver children import it too)."""
    name = f"sampling_worker_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


def test_same_decisions_in_fork_spawn_and_forkserver_children(worker_module) -> None:
    """Children under every start method keep exactly the traces this process keeps."""
    work = carriers(2000, seed=21)
    rate = 0.3
    here_tail, here_head = worker_module.decide(work, rate)
    assert abs(len(here_tail) / len(work) - rate) < 0.05
    # The half with rv is decided by rv: the tail's answer need not equal the trace-id one.
    assert here_tail != here_head
    methods = [
        m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
    ]
    for method in methods:
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        process = ctx.Process(target=worker_module.run, args=(queue, work, rate))
        process.start()
        tail, head = queue.get(timeout=60)
        process.join(60)
        assert process.exitcode == 0, method
        assert tail == here_tail, method
        assert head == here_head, method


def test_same_decisions_in_a_python_subprocess(worker_module, tmp_path: Path) -> None:
    """A fresh interpreter started with subprocess decides the same as this process."""
    work = carriers(500, seed=8)
    (tmp_path / "carriers.json").write_text(json.dumps(work))
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from {worker_module.__name__} import decide
        print(json.dumps(decide(json.load(open({str(tmp_path / "carriers.json")!r})), 0.1)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    tail, head = json.loads(result.stdout)
    assert [tail, head] == [list(x) for x in worker_module.decide(work, 0.1)]
