"""Children ship their records' plain spans to the DB owner, which stores them as the
child's own write would (exporters/tracedb/_ship.py); nothing is lost on the way."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from procscope._sampler import AdjustableRateSampler
from procscope.core import shared_state
from procscope.core.recorder import RecordingSpanProcessor
from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter, _relay

pytestmark = pytest.mark.skipif(not _relay.relay_wanted(), reason="the relay is Linux-only")

PROCSCOPE = str(Path(sys.executable).with_name("procscope"))


def _work(tracer: Any) -> None:
    """Sends and receives through a queue, on two threads (thread spans too)."""
    jobs: queue.Queue[Any] = queue.Queue()

    def worker() -> None:
        for _ in range(5):
            jobs.get()

    with tracer.start_as_current_span("batch"):
        thread = threading.Thread(target=worker, name="worker")
        thread.start()
        for n in range(5):
            jobs.put({"job": n})
        thread.join()


@pytest.fixture(scope="module")
def items(instrumented_run: Any) -> list[tuple[Any, Any]]:
    """What a recorder gives its record sink for ``_work``: (plain span, (resource,
    scope)) pairs."""
    settings = shared_state.settings()
    saved = (settings.sample_rate, settings.level)
    settings.sample_rate, settings.level = 1.0, "full"
    given: list[tuple[Any, Any]] = []
    provider = TracerProvider(sampler=AdjustableRateSampler(0.999999))
    provider.add_span_processor(RecordingSpanProcessor([], sink=given.extend))  # type: ignore[arg-type]
    try:
        instrumented_run(provider, _work)
    finally:
        settings.sample_rate, settings.level = saved
    return given


def _stored(path: str) -> list[Any]:
    """What a reader sees of the spans, ids and processes aside."""
    with TraceDB(path) as db:
        spans = db.spans()
        rows = sorted(
            (s.name, s.kind, s.parent_span_id is None, s.start_ns, s.end_ns,
             json.dumps(s.attributes, sort_keys=True), len(s.events), len(s.links))
            for s in spans
        )  # fmt: skip
        return [rows, sorted({(s.pid, s.process_name) for s in spans}), len(db.messages())]


def test_a_fork_child_ships_plain_spans_the_owner_stores_as_the_child_would(
    items: list[tuple[Any, Any]], tmp_path: Path
) -> None:
    """A fork child's plain spans reach the DB through the owner (the child opens no DB)
    and are stored exactly as written in place, under the child's pid and name."""
    assert len(items) >= 11
    direct = str(tmp_path / "direct.db")
    writer = TraceDBSpanExporter(direct)
    writer.write_records(items)
    writer.shutdown()

    shipped = str(tmp_path / "shipped.db")
    owner = TraceDBSpanExporter(shipped)
    ctx = multiprocessing.get_context("fork")
    results = ctx.SimpleQueue()

    def child() -> None:
        owner.write_records(items)
        results.put((os.getpid(), owner._writer is not None, owner._relay_to is not None))

    process = ctx.Process(target=child, name="Shipper")
    process.start()
    pid, opened_db, still_relaying = results.get()
    process.join(30)
    owner.shutdown()
    assert process.exitcode == 0
    assert (opened_db, still_relaying) == (False, True)
    rows, processes, messages = _stored(shipped)
    direct_rows, _, direct_messages = _stored(direct)
    assert rows == direct_rows and messages == direct_messages == 5
    assert processes == [(pid, "Shipper")]


def test_when_the_owner_is_gone_the_child_writes_its_plain_spans_itself(
    items: list[tuple[Any, Any]], tmp_path: Path
) -> None:
    """With the owner's relay shut, the child's batch is written by the child: every
    span is stored once and nothing is counted lost."""
    path = str(tmp_path / "gone.db")
    owner = TraceDBSpanExporter(path)
    relay = owner._relay
    assert relay is not None
    ctx = multiprocessing.get_context("fork")
    results = ctx.SimpleQueue()

    def child() -> None:
        from procscope.core import losses

        owner.write_records(items)
        results.put((owner._writer is not None, losses.lost_by_reason()))

    relay.close()  # the owner stops taking batches (as at its shutdown)
    process = ctx.Process(target=child)
    process.start()
    opened_db, lost = results.get()
    process.join(30)
    owner.shutdown()
    assert (opened_db, lost) == (True, {})
    with TraceDB(path) as db:
        assert db.span_count() == len(items)


ROUND_TRIP = Path(__file__).parents[2] / "benchmarks" / "messaging" / "round_trip.py"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "_PROCSCOPE"))}


def _procscope_run(script: Path, method: str, n: int) -> str:
    """``procscope run`` of ``script`` (METHOD N) at its defaults; the trace DB's path."""
    db = str(script.with_suffix(".db"))
    run = subprocess.run(
        [PROCSCOPE, "run", "--db", db, "--", sys.executable, str(script), method, str(n)],
        env=ENV, capture_output=True, text=True, timeout=60, cwd=script.parent,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return db


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_the_round_trip_stores_every_message_with_both_ends(method: str, tmp_path: Path) -> None:
    """The issue's round trip (ints to two workers and back), under procscope run at its
    defaults: every message is listed by `procscope messages` with its sender and its
    receiver, and `procscope traces` reports no incomplete recording."""
    n = 1500
    script = tmp_path / "round_trip.py"
    script.write_text(ROUND_TRIP.read_text())
    db, env = _procscope_run(script, method, n), ENV
    listed = subprocess.run(
        [PROCSCOPE, "messages", "--db", db, "--json", "--limit", str(10 * n)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    messages = json.loads(listed.stdout)
    both_ends = [m for m in messages if m["sender"] and m["receiver"]]
    assert len(both_ends) == len(messages) == 2 * n + 2
    # The program sends n ints and two stops; its workers send n results between them
    # (one may get every int: a spawned worker can start late).
    program, *workers = Counter(m["sender"]["pid"] for m in messages).most_common()
    assert program[1] == n + 2 and 1 <= len(workers) <= 2
    traces = subprocess.run(
        [PROCSCOPE, "traces", "--db", db], env=env, capture_output=True, text=True, timeout=60
    )
    assert traces.returncode == 0 and "incomplete" not in traces.stderr, traces.stderr


KILLED = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    from opentelemetry import trace

    def worker(first, rest, ready, n):
        for i in range(n):
            first.put(i)
        first.close()
        first.join_thread()  # every item is in the pipe
        trace.get_tracer_provider().force_flush()  # these n sends are stored
        for i in range(n, 2 * n):
            rest.put(i)  # not flushed when the child is killed
        ready.set()
        time.sleep(60)

    if __name__ == "__main__":
        mp.set_start_method(sys.argv[1])
        n = int(sys.argv[2])
        first, rest, ready = mp.Queue(), mp.Queue(), mp.Event()
        child = mp.Process(target=worker, args=(first, rest, ready, n), name="Doomed")
        child.start()
        ready.wait(60)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        for _ in range(n):
            first.get(timeout=60)
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_killed_mid_run_keeps_what_it_shipped(method: str, tmp_path: Path) -> None:
    """A child SIGKILLed after a flush: every message it sent before the flush is stored
    (with the program's receive), and `procscope processes` says it was killed; what it
    recorded after the flush is gone with it (no process can count it)."""
    n = 300
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    db, env = _procscope_run(script, method, n), ENV
    listed = subprocess.run(
        [PROCSCOPE, "messages", "--db", db, "--json", "--from", "Doomed", "--limit", "10000"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    sent = json.loads(listed.stdout)
    contents = {m["content"] for m in sent}
    assert set(range(n)) <= contents <= set(range(2 * n))
    processes = subprocess.run(
        [PROCSCOPE, "processes", "--db", db], env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    doomed = [line for line in processes.stdout.splitlines() if "Doomed" in line]
    assert doomed and "SIGKILL" in doomed[0], processes.stdout
