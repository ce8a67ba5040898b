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


def test_work_found_late_that_then_makes_progress_is_waited_for() -> None:
    """What is left may go up before it goes down (the trace DB's span backlog is found
    only once the queues are empty): a change either way counts as progress, so a
    shutdown that then indexes steadily finishes under a 0.5 s budget."""
    left = [0]
    done = threading.Event()

    def finds_a_backlog_then_indexes_it() -> None:
        done.wait(0.4)  # (the queues' part: nothing left to count)
        left[0] = 8
        while left[0]:
            done.wait(0.2)
            left[0] -= 1

    assert run_within(0.5, finds_a_backlog_then_indexes_it, "test-shutdown",
                      lambda: left[0], 30.0)
    assert left[0] == 0
