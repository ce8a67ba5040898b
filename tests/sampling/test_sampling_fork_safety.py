"""The tail sampler in a fork child, whatever the order of the at-fork hooks (issue 14).

Each case runs a real program in its own interpreter, which forks for real; the timeout
of ``subprocess.run`` is a hang detector, not a performance bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

HANG_SECONDS = 60

# The processor's lock is held by another thread at the moment of the fork (as when its
# decision-wait worker is busy), and a span ends in the child inside an at-fork hook that
# runs BEFORE the processor's own (registered first), as the SDK's batch processor hook
# did when it started its thread through procscope's patched ThreadPoolExecutor.submit.
PROGRAM = textwrap.dedent(
    """
    import os, sys, threading, time
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from procscope.processors.sampling import TailSamplingProcessor

    provider = TracerProvider()
    tracer = provider.get_tracer("fork-test")

    def span_in_child_hook():
        with tracer.start_as_current_span("made in an after-fork hook"):
            pass

    os.register_at_fork(after_in_child=span_in_child_hook)  # runs before the processor's
    exporter = InMemorySpanExporter()
    processor = TailSamplingProcessor(SimpleSpanProcessor(exporter), lambda trace: True)
    provider.add_span_processor(processor)
    with tracer.start_as_current_span("parent's trace"):
        pass  # buffered: the worker is running

    held = threading.Event()
    release = threading.Event()

    def hold_the_lock():
        with processor._lock:  # what the busy worker does while it closes traces
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        with tracer.start_as_current_span("child's own"):
            pass
        processor.force_flush()
        names = sorted(span.name for span in exporter.get_finished_spans())
        os._exit(0 if "child's own" in names else 3)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    """
)


def test_a_span_in_an_after_fork_hook_does_not_hang_while_the_lock_was_held() -> None:
    """A fork while another thread holds the sampler's lock, and a span ended in the child
    by an at-fork hook that runs before the sampler's: the child records and exits 0."""
    code, out, err = run_with_hang_detector(PROGRAM)
    assert code == 0, err
    assert out.strip() == "child exit 0", err


# RateLimitPolicy's token bucket has a lock of its own, taken by whichever thread completes
# a trace: held by another thread at the fork, and a trace completed in the child by a
# program's at-fork hook registered before the processor existed.
POLICY_PROGRAM = textwrap.dedent(
    """
    import os, threading
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from procscope.processors.sampling import RateLimitPolicy, TailSamplingProcessor

    provider = TracerProvider()
    tracer = provider.get_tracer("fork-test")

    def trace_in_child_hook():  # registered first: runs before any other at-fork hook
        with tracer.start_as_current_span("completed in an after-fork hook"):
            pass

    os.register_at_fork(after_in_child=trace_in_child_hook)
    exporter = InMemorySpanExporter()
    policy = RateLimitPolicy(1000.0)
    provider.add_span_processor(TailSamplingProcessor(SimpleSpanProcessor(exporter), policy))

    held, release = threading.Event(), threading.Event()

    def decide_slowly():  # as a thread inside evaluate() at the moment of the fork
        with policy._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=decide_slowly)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        names = [span.name for span in exporter.get_finished_spans()]
        os._exit(0 if names == ["completed in an after-fork hook"] else 3)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    """
)



def test_a_trace_decided_in_an_after_fork_hook_while_the_policy_lock_was_held() -> None:
    """A parent's thread holds RateLimitPolicy's lock at the fork; the child's earlier
    at-fork hook completes a trace: it is decided, kept, and the child exits 0."""
    code, out, err = run_with_hang_detector(POLICY_PROGRAM)
    assert code == 0, err
    assert out.strip() == "child exit 0", err


def run_with_hang_detector(program: str) -> tuple[int, str, str]:
    """Run ``program``; on a hang, kill its whole process group (the hung child too)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={"PROCSCOPE_RAISE_INTERNAL_ERRORS": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        out, err = proc.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"hung (killed after {HANG_SECONDS} s): {err}") from None
    return proc.returncode, out, err
