"""procscope's shutdown budget: cut short when nothing moves, never while an export
keeps making progress (issue 14, finding 3). Real threads; the outcome, not the time,
is asserted."""

from __future__ import annotations

import threading

from procscope._scope import run_within


def test_a_shutdown_that_keeps_exporting_is_waited_for_past_the_budget() -> None:
    """A flush that sends a batch every 0.2 s, 2 s in all, finishes under a 0.5 s budget:
    each batch that leaves the queue extends the wait (up to the 30 s cap)."""
    left = [10]
    done = threading.Event()

    def slow_but_alive() -> None:
        while left[0]:
            done.wait(0.2)
            left[0] -= 1

    assert run_within(0.5, slow_but_alive, "test-shutdown", lambda: left[0], 30.0)
    assert left[0] == 0


def test_a_shutdown_stuck_on_a_dead_backend_is_given_up() -> None:
    """A flush that never gets a batch out is left behind once the budget is spent."""
    release = threading.Event()
    try:
        assert not run_within(0.3, release.wait, "test-shutdown", lambda: 5, 30.0)
    finally:
        release.set()


def test_a_backlog_indexed_at_the_end_is_waited_for_but_a_refilled_queue_is_not() -> None:
    """The trace DB's span backlog, found once the queues are empty, counts by the spans
    indexed so far (negated, as ``queued_spans`` counts it): an end that indexes steadily
    finishes under a 0.5 s budget. A queue that a thread keeps refilling goes down and
    up again without end: no new low, no progress, given up at the budget."""
    indexed = [0]
    stop = threading.Event()

    def indexes_a_backlog() -> None:
        stop.wait(0.2)
        for _ in range(8):
            stop.wait(0.15)
            indexed[0] += 1024

    assert run_within(0.5, indexes_a_backlog, "test-shutdown", lambda: -indexed[0], 30.0)
    assert indexed[0] == 8 * 1024

    queued = [10]

    def refilled() -> None:
        while not stop.is_set():
            queued[0] = 5 if queued[0] == 10 else 10
            stop.wait(0.05)

    looks = [0]

    def still_queued() -> int:
        looks[0] += 1
        return queued[0]

    try:
        assert not run_within(0.5, refilled, "test-shutdown", still_queued, 5.0)
        assert looks[0] < 20  # (given up about a window past the budget, not at 5 s)
    finally:
        stop.set()
