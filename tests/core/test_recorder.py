"""The recorder: records reach the processors in order, overflow is a policy and every
record not kept is counted, and fork children neither inherit the parent's records nor
hang on its locks."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from procscope.core.recorder import RecordingSpanProcessor, RecordKind


class Echo(RecordKind):
    """Materialises a record as its own payload (the processors see what was appended)."""

    def materialise(self, record: tuple[Any, ...]) -> Any:
        return record[1]


ECHO = Echo()


class Collect:
    """A span processor that keeps what it receives; ``gate`` (when set) holds on_end."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.seen: list[Any] = []
        self.gate = gate
        self.entered = threading.Event()
        self.flushed = 0
        self.shut = False

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        if not self.entered.is_set():  # (set() takes a lock: not in every fork child)
            self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        self.seen.append(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self) -> None:
        self.shut = True


def wait_until(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_records_reach_processors_in_order_and_flush_delivers_all() -> None:
    """Records from several threads arrive whole, each thread's in its own order, and
    force_flush returns only once every record appended before it is delivered."""
    sink = Collect()
    recorder = RecordingSpanProcessor([sink])
    try:

        def produce(tag: int) -> None:
            for i in range(2000):
                recorder.append((ECHO, (tag, i)))

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert recorder.force_flush()
        assert len(sink.seen) == 8000
        for tag in range(4):
            assert [i for t, i in sink.seen if t == tag] == list(range(2000))
        assert sink.flushed == 1 and recorder.lost == 0
    finally:
        recorder.shutdown()
    assert sink.shut


def test_drop_policy_counts_every_record_it_does_not_keep() -> None:
    """overflow=drop: with the processors stalled, the buffer fills, appends return at
    once, and delivered + lost equals what was appended."""
    gate = threading.Event()
    sink = Collect(gate)
    recorder = RecordingSpanProcessor([sink], capacity=64, overflow="drop")
    try:
        recorder.append((ECHO, -1))  # the drain takes it and stalls in on_end
        assert sink.entered.wait(10) and recorder.pending() == 1
        started = time.monotonic()
        for i in range(1000):
            recorder.append((ECHO, i))
        assert time.monotonic() - started < 5  # never waited on the stalled drain
        assert recorder.lost > 0
        gate.set()
        recorder.force_flush()
        assert len(sink.seen) + recorder.lost == 1001
        assert sink.seen[0] == -1 and sink.seen[1:] == sorted(sink.seen[1:])
    finally:
        gate.set()
        recorder.shutdown()


def test_wait_policy_loses_nothing_when_export_catches_up() -> None:
    """overflow=wait: a producer faster than a stalled drain waits for room, and once the
    drain moves again every record arrives, none counted lost."""
    gate = threading.Event()
    sink = Collect(gate)
    recorder = RecordingSpanProcessor([sink], capacity=64, overflow="wait", wait_limit=30)
    try:
        done = threading.Event()

        def produce() -> None:
            for i in range(1000):
                recorder.append((ECHO, i))
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        assert wait_until(lambda: recorder.pending() >= 64)
        assert not done.is_set()  # the producer is held at the full buffer
        gate.set()
        producer.join(30)
        assert done.is_set()
        recorder.force_flush()
        assert sink.seen == list(range(1000)) and recorder.lost == 0
    finally:
        gate.set()
        recorder.shutdown()


def test_wait_policy_is_bounded() -> None:
    """overflow=wait with a drain stalled for good: each append waits at most wait_limit,
    then the record is dropped and counted; the program goes on."""
    gate = threading.Event()
    stalled = Collect(gate)
    recorder = RecordingSpanProcessor([stalled], capacity=16, overflow="wait", wait_limit=0.05)
    try:
        recorder.append((ECHO, -1))
        assert stalled.entered.wait(10)
        for i in range(40):
            recorder.append((ECHO, i))
        assert recorder.lost == 40 - 16
    finally:
        gate.set()
        recorder.shutdown()


def test_a_record_after_shutdown_is_counted_not_kept() -> None:
    """After shutdown nothing is delivered any more, and nothing vanishes uncounted."""
    sink = Collect()
    recorder = RecordingSpanProcessor([sink])
    recorder.append((ECHO, 1))
    recorder.shutdown()
    recorder.append((ECHO, 2))
    assert sink.seen == [1] and recorder.lost == 1


def test_a_bad_record_costs_only_itself() -> None:
    """A record whose kind fails to materialise is counted; the rest of its batch arrives."""

    class Broken(RecordKind):
        def materialise(self, record: tuple[Any, ...]) -> Any:
            raise ValueError("broken")

    sink = Collect()
    recorder = RecordingSpanProcessor([sink])
    try:
        recorder.append((ECHO, 1))
        recorder.append((Broken(), 2))
        recorder.append((ECHO, 3))
        # Under the test suite (PROCSCOPE_RAISE_INTERNAL_ERRORS) the error is raised by the
        # next flush, after the rest of the batch is delivered.
        with pytest.raises(ValueError, match="broken"):
            recorder.force_flush()
        assert sink.seen == [1, 3] and recorder.lost == 1
    finally:
        recorder.shutdown()


def _fork_and_report(recorder: RecordingSpanProcessor, sink: Collect, depth: int) -> int:
    """Fork; the child appends, flushes and reports (through its exit status) how many of
    its own records it delivered, after forking a grandchild when depth > 1."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            before = len(sink.seen)
            if depth > 1:
                grandchild = _fork_and_report(recorder, sink, depth - 1)
                if grandchild != 10:
                    os._exit(90 + min(grandchild, 8))
            for i in range(10):
                recorder.append((ECHO, ("child", os.getpid(), i)))
            recorder.force_flush(5000)
            mine = [s for s in sink.seen[before:] if s[:2] == ("child", os.getpid())]
            inherited = [s for s in sink.seen[before:] if s[:2] != ("child", os.getpid())]
            code = len(mine) if not inherited else 80
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1  # hung


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_fork_while_another_thread_appends() -> None:
    """A fork while another thread appends: the child delivers its own records, none of
    the parent's, and does not hang; the parent loses nothing."""
    sink = Collect()
    recorder = RecordingSpanProcessor([sink], overflow="wait", wait_limit=30)
    stop = threading.Event()
    count = [0]

    def produce() -> None:
        while not stop.is_set():
            recorder.append((ECHO, ("parent", count[0])))
            count[0] += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert wait_until(lambda: count[0] > 1000)
        results = [_fork_and_report(recorder, sink, 1) for _ in range(5)]
    finally:
        stop.set()
        producer.join()
    recorder.force_flush()
    recorder.shutdown()
    assert results == [10] * 5
    assert len([s for s in sink.seen if s[0] == "parent"]) == count[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_fork_while_the_drain_holds_its_locks() -> None:
    """A fork while the drain thread is inside a delivery (holding the drain lock): the
    child, which has no drain thread, still appends and flushes; children of children
    too."""
    gate = threading.Event()
    sink = Collect()
    recorder = RecordingSpanProcessor([sink])
    stalling = Collect(gate)
    recorder.downstream = (stalling, sink)  # the drain stalls in the first processor
    try:
        recorder.append((ECHO, ("parent", 0)))
        assert wait_until(lambda: recorder._draining.locked())
        recorder.downstream = (sink,)  # (the child delivers to sink only)
        assert _fork_and_report(recorder, sink, 1) == 10
        assert _fork_and_report(recorder, sink, 3) == 10
    finally:
        gate.set()
        recorder.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_fork_child_that_records_nothing_starts_no_thread() -> None:
    """A fork child has no recorder thread until its first record."""
    recorder = RecordingSpanProcessor([Collect()])
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                names = [t.name for t in threading.enumerate()]
                before = "procscope-recorder" in names
                recorder.append((ECHO, 1))
                after = "procscope-recorder" in [t.name for t in threading.enumerate()]
                os.write(write, f"{before} {after}".encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        assert os.read(read, 100).decode() == "False True"
        os.close(read)
    finally:
        recorder.shutdown()


@pytest.mark.parametrize(("rate", "most"), [(0.5, 9), (1.0, None)])
def test_below_rate_1_a_trickle_of_records_is_delivered_in_few_batches(
    rate: float, most: int | None
) -> None:
    """Head sampling below 1: a record every 10 ms for a second is delivered in at most
    one batch per 200 ms (each delivery to the trace DB is a transaction), and all of
    it; at full recall the drain runs every 50 ms."""
    from procscope.core import shared_state

    live = shared_state.settings()
    before = live.sample_rate
    live.sample_rate = rate
    batches: list[int] = []

    class Counting(RecordingSpanProcessor):
        def _deliver(self, batch: list[tuple[Any, ...]]) -> None:
            batches.append(len(batch))
            super()._deliver(batch)

    recorder = Counting([Collect()])
    try:
        for i in range(100):
            recorder.append((ECHO, i))
            time.sleep(0.01)
        if most is None:
            assert len(batches) >= 5  # (about 20; fewer on a loaded machine)
        else:
            assert len(batches) <= most, batches
        recorder.force_flush()
        assert sum(batches) == 100
    finally:
        recorder.shutdown()
        live.sample_rate = before


def test_the_idle_hook_runs_when_the_program_is_idle_not_while_it_computes() -> None:
    """The sink's deferred work (``idle``) runs once nothing has been recorded for a
    while and the program's threads are not using the CPU: not while the program
    computes without recording anything, and not once the hook says it is done (until
    its recheck); ``settle`` runs it to the end on the caller's thread."""
    calls: list[float] = []
    left = [500]  # (steps to do: more than the drain takes in the seconds before settle)

    def idle() -> bool:
        calls.append(time.monotonic())
        left[0] -= 1
        return left[0] <= 0

    recorder = RecordingSpanProcessor([Collect()], idle=idle)
    try:
        recorder.append((ECHO, "a record"))
        recorder.force_flush()
        time.sleep(0.6)  # (past the quiet time the hook waits for)
        # Computing, nothing recorded: 1.5 s of 0.25 s stretches in which this thread had
        # most of a CPU (on a machine loaded by other tests a stretch may get less, and
        # the program is then rightly seen as idle: such a stretch is not counted).
        while_computing, computed, deadline = 0, 0.0, time.monotonic() + 60
        while computed < 1.5 and time.monotonic() < deadline:
            before, wall, cpu = len(calls), time.monotonic(), time.thread_time()
            while time.monotonic() < wall + 0.25:
                sum(range(1000))
            if time.thread_time() - cpu >= 0.7 * (time.monotonic() - wall):
                while_computing += len(calls) - before
                computed += time.monotonic() - wall
        assert computed >= 1.5
        before = len(calls)
        time.sleep(1.5)
        while_sleeping = len(calls) - before
        assert while_sleeping >= 5
        assert while_computing * 4 < while_sleeping
        assert recorder.settle(10_000) is True and left[0] <= 0
        time.sleep(0.2)  # (the drain's own next call, scheduled before: told it is done)
        settled = len(calls)
        time.sleep(1.0)  # (done: not called again before its recheck, 2 s on)
        assert len(calls) == settled
    finally:
        recorder.shutdown()
