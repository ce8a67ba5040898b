"""Pool workers that their own pool terminates (Pool.terminate, Pool.__exit__) end as
expected, not as failures; a worker killed by anything else is still a failure."""

from __future__ import annotations

from typing import Any

POOL_HELPERS = """
import multiprocessing as mp
import signal

def square(x):
    return x * x

def busy():
    emit(busy=os.getpid())
    started.set()  # a module global, inherited by the forked workers
    time.sleep(30)  # still running when the pool is terminated: surely SIGTERMed

def die():
    # Killed while running a task: an idle worker may hold the queue's lock, and a pool
    # whose worker died holding it hangs (a multiprocessing limitation, not ours).
    emit(victim=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_terminated_by_their_pool_are_not_errors_but_a_killed_one_is(
    run_program: Any,
) -> None:
    """with Pool: workers end 'terminated_by_pool' (signal 15, no error); SIGKILL: error."""
    run = run_program(
        """
        ctx = mp.get_context("fork")
        started = ctx.Event()
        with ctx.Pool(2) as pool:
            emit(squares=pool.map(square, range(4)))
            pool.apply_async(busy)
            started.wait(30)
        with ctx.Pool(1) as pool:
            pool.apply_async(die)
            # The pool replaces the dead worker; the new one answers.
            emit(replacement=pool.apply(os.getpid))
        """,
        helpers=POOL_HELPERS,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-800:]
    assert run.line("squares")["squares"] == [0, 1, 4, 9]
    victim = run.line("victim")["victim"]
    workers = [r for r in run.db.processes() if "PoolWorker" in (r.name or "")]
    killed = [r for r in workers if r.pid == victim]
    terminated = [r for r in workers if r.pid != victim]
    assert len(killed) == 1 and len(terminated) == 3, [(r.name, r.pid) for r in workers]
    (dead,) = killed
    assert (dead.exit_signal, dead.error) == (9, True)
    assert dead.exit_reason is None
    # The busy worker was surely SIGTERMed by its pool, and its own process span, ended
    # by the SIGTERM handler, got out too. An idle worker may instead have taken the
    # pool's stop sentinel and exited by itself (code 0), and the pool may have replaced
    # it, just before, by a worker that its SIGTERM then met before it ran anything.
    (busy,) = [r for r in terminated if r.pid == run.line("busy")["busy"]]
    assert (busy.exit_signal, busy.exit_reason) == (15, "terminated_by_pool")
    assert busy.run_span_id is not None
    for record in terminated:
        if record.exit_signal is None:
            assert record.exit_code == 0, record
        else:
            assert record.exit_signal == 15, record
            assert record.exit_reason == "terminated_by_pool", record
        assert not record.error and record.error_message is None, record
        # Neither the parent's exit span nor the worker's own process span is an error.
        spans = [
            s
            for s in run.db.spans()
            if s.pid == record.pid or (s.attributes or {}).get("process.pid") == record.pid
        ]
        # The parent's exit span is always there; the worker's own process span only when
        # its SIGTERM handler got to flush it (not every time: see docs/lifecycle.md).
        assert "reap" in {s.attributes.get("procscope.lifecycle.role") for s in spans}
        assert all(s.status_code != 2 for s in spans), [(s.name, s.status_code) for s in spans]
