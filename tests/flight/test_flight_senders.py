"""A recorded receive names its sender where both ends are in one dump."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import cli, run_program

PAIRS = """
import queue
import sys
import threading

import procscope

procscope.setup(sample_rate=0.01, db=sys.argv[1])
jobs = procscope.name(queue.Queue(), "jobs")
for i in range(5):
    jobs.put(-1)  # (taken before the window below: their puts are not in the dump)
for i in range(5):
    jobs.get()
procscope.dump("before")  # (a dump takes its records out of the ring)
# (made at rate 0, unsampled for certain: at 0.01 one in 100 would be a span, which its
# get would then name as its sender)
procscope.configure(sample_rate=0.0)
jobs.put(-2)  # (in the queue when the window begins: its put is in the dump's window)
procscope.configure(sample_rate=0.01)
procscope.dump("just one put")


def consume():
    while jobs.get() != 299:
        pass


consumer = threading.Thread(target=consume, name="consumer")
consumer.start()
for i in range(300):
    jobs.put(i)
consumer.join()
jobs.put(300)  # (never taken: a message with no receiver)
procscope.dump("pairs")
procscope.shutdown()
"""


def messages_of_jobs(tmp_path: Path, program: str) -> tuple[list[Any], dict[int, Any]]:
    """Run ``program``; ``procscope messages --queue jobs``, and those the consumer thread
    took, by content."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, program, str(db))
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--queue", "jobs", "--limit", "100000")
    taken = {int(r["content"]): r for r in rows
             if r["receiver"] and r["receiver"]["thread_name"] == "consumer"}
    return rows, taken


def test_a_recorded_receive_names_its_sender(tmp_path: Path) -> None:
    """At rate 0.01, a thread takes 300 messages from a queue.Queue and the program
    dumps: `procscope messages --to consumer` shows each of the 300 with its sender
    (MainThread) and receiver (consumer); the message put and never taken has no
    receiver; the one already in the queue before is not given a wrong sender."""
    rows, taken = messages_of_jobs(tmp_path, PAIRS)
    assert sorted(taken) == [-2, *range(300)]
    for n in range(300):
        assert taken[n]["sender"] is not None, taken[n]
        assert taken[n]["sender"]["thread_name"] == "MainThread"
    # -2's put was in an earlier dump: its get is not paired with another put.
    assert taken[-2]["sender"] is None
    (last,) = [r for r in rows if int(r["content"]) == 300]
    assert last["receiver"] is None and last["sender"]["thread_name"] == "MainThread"


ASYNC_PAIRS = """
import asyncio
import sys

import procscope

procscope.setup(sample_rate=0.01, db=sys.argv[1])


async def main():
    jobs = procscope.name(asyncio.Queue(), "tasks")

    async def consume():
        for _ in range(200):
            await jobs.get()

    consumer = asyncio.create_task(consume(), name="consumer")
    for i in range(200):
        await jobs.put(i)
        await asyncio.sleep(0)
    await consumer
    procscope.dump("pairs")


asyncio.run(main())
procscope.shutdown()
"""


def test_a_sampled_message_left_in_the_queue_does_not_unpair_the_others(
    tmp_path: Path,
) -> None:
    """The message never taken is sampled (put in a request's sampled trace): it is in
    the queue at the dump, a span rather than a record; the 300 unsampled messages before
    it still each show their sender (the pairing counted it as one of its own, once)."""
    program = PAIRS.replace(
        "jobs.put(300)",
        "from opentelemetry import trace\n"
        "from opentelemetry.trace.propagation.tracecontext import "
        "TraceContextTextMapPropagator\n"
        "incoming = TraceContextTextMapPropagator().extract(\n"
        "    {'traceparent': '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'})\n"
        "with trace.get_tracer('app').start_as_current_span('request', context=incoming):\n"
        "    jobs.put(300)",
    )
    rows, taken = messages_of_jobs(tmp_path, program)
    assert all(taken[n]["sender"] is not None for n in range(300)), [
        n for n in range(300) if taken[n]["sender"] is None]
    (last,) = [r for r in rows if int(r["content"]) == 300]
    assert last["receiver"] is None and last["sender"]["thread_name"] == "MainThread"
    assert last["sender"]["span_id"]  # (its put's own span)


def test_a_recorded_asyncio_receive_names_its_sender(tmp_path: Path) -> None:
    """At rate 0.01, a task takes 200 messages from an asyncio.Queue: after a dump each
    of them shows its sender and its receiver in `procscope messages`."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, ASYNC_PAIRS, str(db))
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--queue", "tasks", "--limit", "100000")
    assert sorted(int(r["content"]) for r in rows) == list(range(200))
    assert all(r["sender"] is not None and r["receiver"] is not None for r in rows)


def test_a_sampled_threads_recorded_receives_keep_its_name(tmp_path: Path) -> None:
    """The consumer's own span is sampled (started at rate 1, the rest at 0.01): its
    receives of unsampled messages are in the dump, and `procscope messages` names their
    receiver by the thread's name, not by an ident (threading forgets an ended thread)."""
    program = PAIRS.replace(
        'consumer = threading.Thread(target=consume, name="consumer")\nconsumer.start()',
        "procscope.configure(sample_rate=1.0)\n"
        'consumer = threading.Thread(target=consume, name="consumer")\n'
        "consumer.start()\n"
        "procscope.configure(sample_rate=0.01)",
    )
    assert program != PAIRS
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, program, str(db))
    assert done.returncode == 0, done.stderr
    rows = cli("messages", "--db", str(db), "--queue", "jobs", "--limit", "100000")
    consumed = {int(r["content"]): r["receiver"] for r in rows if int(r["content"]) >= 0}
    assert sorted(n for n, receiver in consumed.items() if receiver) == list(range(300))
    names = {consumed[n]["thread_name"] for n in range(300)}
    assert names == {"consumer"}, names
