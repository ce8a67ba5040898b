"""A batch handed to the DB owner's relay counts as exported only once the owner has
stored it: an owner killed while stalled costs the children time, never spans."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter, _relay
from procscope.exporters.tracedb._writer import Writer

pytestmark = pytest.mark.skipif(not _relay.relay_wanted(), reason="the relay is Linux-only")

CHILDREN = 4
SPANS_PER_CHILD = 256

_OWNER = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags
    from procscope.exporters.tracedb import TraceDBSpanExporter

    path, children, per_child = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    owner = TraceDBSpanExporter(path)  # owns the DB: runs the relay

    def child(number):
        spans = [
            ReadableSpan(
                name=f"child {number} span {i}",
                context=SpanContext(number + 1, number * 100_000 + i + 1, False, TraceFlags(1)),
                start_time=1,
                end_time=2,
            )
            for i in range(per_child)
        ]
        print("exporting", os.getpid(), flush=True)
        for start in range(0, per_child, 64):
            owner.export(spans[start:start + 64])
        owner.shutdown()
        print("exported", os.getpid(), flush=True)

    ctx = multiprocessing.get_context("fork")
    for number in range(children):
        ctx.Process(target=child, args=(number,)).start()
    time.sleep(3600)  # killed by the test
    """
)


def _span_count(path: str) -> int:
    with TraceDB(path) as db:
        return db.span_count()


def test_children_lose_nothing_when_the_stalled_owner_is_killed(tmp_path: Any) -> None:
    """The owner cannot store (another connection holds the write lock) and is SIGKILLed
    after its children sent their batches; once the lock is free every span is stored."""
    path = str(tmp_path / "trace.db")
    Writer(path).close()  # the DB exists, with its schema
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the owner's writes now wait for this lock
    env = dict(os.environ, PROCSCOPE_DB_TIMEOUT="60")
    env.pop(_relay.ENV_RELAY_ADDRESS, None)
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, path, str(CHILDREN), str(SPANS_PER_CHILD)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert owner.stdout is not None
        lines: list[str] = []
        while sum(line.startswith("exporting") for line in lines) < CHILDREN:
            lines.append(owner.stdout.readline())
        time.sleep(1.0)  # let the children's first batches reach the stalled owner
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        blocker.execute("ROLLBACK")
        blocker.close()
    expected = CHILDREN * SPANS_PER_CHILD
    deadline = time.monotonic() + 60
    while _span_count(path) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _span_count(path) == expected
    assert owner.stdout is not None
    ended = "".join(lines).split() + owner.stdout.read().split()
    owner.stdout.close()
    assert ended.count("exported") == CHILDREN


def test_a_batch_stored_twice_is_kept_once(tmp_path: Any, make_span: Any) -> None:
    """A child that writes a batch itself after its owner already stored it (the owner
    died before acknowledging) leaves each span once."""
    path = str(tmp_path / "trace.db")
    spans = [make_span(f"s{i}", trace_id=3, span_id=i + 1, events=[("e", 5, {"k": i})])
             for i in range(10)]  # fmt: skip
    exporter = TraceDBSpanExporter(path)
    assert exporter.export(spans).name == "SUCCESS"
    writer = exporter._writer_here()
    from procscope.exporters.tracedb._convert import spans_to_batch

    writer.write(_relay.Batch(), build=lambda: spans_to_batch(spans, writer, 1, "x"),
                 skip_stored=True)  # fmt: skip
    exporter.shutdown()
    with TraceDB(path) as db:
        found = db.spans()
    assert sorted(s.name for s in found) == sorted(f"s{i}" for i in range(10))
    assert all(len(s.events) == 1 for s in found)
    assert _span_count(path) == 10


def test_relayed_batches_are_stored_exactly_once(tmp_path: Any, make_span: Any) -> None:
    """Many fork children through the relay: every span once, none written twice."""
    import multiprocessing

    path = str(tmp_path / "trace.db")
    owner = TraceDBSpanExporter(path)
    ctx = multiprocessing.get_context("fork")

    def child(number: int) -> None:
        spans = [make_span(f"c{number}-{i}", trace_id=number + 1, span_id=i + 1)
                 for i in range(50)]  # fmt: skip
        for start in range(0, 50, 10):
            assert owner.export(spans[start : start + 10]).name == "SUCCESS"
        assert owner._writer is None  # the owner stored them, the child opened nothing

    processes = [ctx.Process(target=child, args=(n,)) for n in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    owner.shutdown()
    conn = sqlite3.connect(path)
    try:
        total = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        distinct = conn.execute("SELECT count(DISTINCT trace_id || ':' || span_id) FROM spans")
        assert (total, distinct.fetchone()[0]) == (200, 200)
    finally:
        conn.close()


def test_a_batch_past_its_senders_deadline_is_stored_without_duplicates(
    tmp_path: Any, make_span: Any
) -> None:
    """A batch still queued at the owner when its sender stopped waiting (the sender may
    have died, or be writing it itself) is stored, each span once."""
    from procscope.exporters.tracedb._convert import spans_to_batch

    path = str(tmp_path / "trace.db")
    owner = TraceDBSpanExporter(path)
    spans = [make_span(f"s{i}", trace_id=9, span_id=i + 1) for i in range(10)]
    assert owner.export(spans[:4]).name == "SUCCESS"  # the sender wrote these itself
    ids = _relay.LocalIds()
    batch = spans_to_batch(spans, ids, 1234, "child")  # type: ignore[arg-type]
    late = {"token": "t", "reply": "00", "until": time.monotonic() - 1.0}
    message = _relay.decode(_relay.encode(path, batch, ids, late), path)
    assert message is not None
    assert owner._write_relayed(message) is True
    owner.shutdown()
    with TraceDB(path) as db:
        assert sorted(s.name for s in db.spans()) == sorted(f"s{i}" for i in range(10))
        assert db.span_count() == 10


def test_batches_queued_together_are_stored_each_row_on_its_own_span(
    tmp_path: Any, make_span: Any
) -> None:
    """Batches of several children that the owner writes in one transaction keep every
    event, link and index row on its own span, also where a late batch leaves out spans
    the DB holds already (its row ids then have gaps)."""
    from procscope.exporters.tracedb._convert import spans_to_batch

    path = str(tmp_path / "trace.db")
    owner = TraceDBSpanExporter(path)

    def span(child: int, n: int) -> Any:
        return make_span(
            f"c{child}-s{n}",
            trace_id=100 + child,
            span_id=n + 1,
            attributes={"messaging.message.id": f"m{child}-{n}"},
            events=[
                ("procscope.state.change", 10**18 + n, {"procscope.state.object": f"o{child}-{n}"})
            ],
            links=[(7, 1000 * child + n, {})],
        )

    children = {child: [span(child, n) for n in range(6)] for child in range(3)}
    assert owner.export(children[1][:3]).name == "SUCCESS"  # stored before: left out
    messages = []
    for child, spans in children.items():
        ids = _relay.LocalIds()
        batch = spans_to_batch(spans, ids, 1000 + child, f"child-{child}")  # type: ignore[arg-type]
        ack = {"token": "t", "reply": "00", "until": time.monotonic() + (-1 if child == 1 else 60)}
        message = _relay.decode(_relay.encode(path, batch, ids, ack), path)
        assert message is not None
        messages.append(message)
    assert owner._write_relayed_all(messages) is True
    owner.shutdown()
    with TraceDB(path) as db:
        assert db.span_count() == 18
        for child in range(3):
            for n in range(6):
                name = f"c{child}-s{n}"
                found = db.spans(attributes={"messaging.message.id": f"m{child}-{n}"})
                assert [s.name for s in found] == [name]
                [stored] = found
                assert [e.attributes["procscope.state.object"] for e in stored.events] == [
                    f"o{child}-{n}"
                ]
                assert [link.span_id for link in stored.links] == [format(1000 * child + n, "016x")]
                by_state = db.spans(name=name)
                assert len(by_state) == 1
