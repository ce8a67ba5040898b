"""Threads that ``threading`` did not start (``_thread.start_new_thread``, C libraries):
procscope must not register a ``_DummyThread`` for them.

The program is run twice, plainly (procscope imported, not set up) and under
``procscope.setup()``, and what it prints must be the same.
"""

from __future__ import annotations

from typing import Any

# Every instrumentor on: messaging and state also run in the threads these programs make.
ALL_INSTRUMENTORS = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ""}


# --- threads not made by threading -----------------------------------------------------------

FOREIGN = """
import _thread, queue, subprocess, threading

def dummies():
    return [t.name for t in threading.enumerate() if isinstance(t, threading._DummyThread)]

def in_foreign_thread(done, seen):
    # Only what registers no thread plainly (creating a Thread or running asyncio.run in
    # such a thread calls current_thread() in the standard library itself).
    try:
        jobs = queue.Queue(); jobs.put("x"); jobs.get()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        try:
            sys.exit(3)   # ends a thread, not the program
        except SystemExit:
            pass
        seen["dummies"] = dummies()
        seen["registered"] = threading.get_ident() in threading._active
    except BaseException as exc:
        seen["error"] = repr(exc)
    finally:
        done.release()
"""


def test_a_foreign_thread_gets_no_dummy_thread(run_plain_and_traced: Any) -> None:
    """Work done in a _thread.start_new_thread thread (a queue, a subprocess, sys.exit)
    registers no _DummyThread: threading._active and threading.enumerate() stay as plain."""
    body = """
    done = _thread.allocate_lock(); done.acquire()
    seen = {}
    _thread.start_new_thread(in_foreign_thread, (done, seen))
    done.acquire()
    emit(seen=seen, after=dummies())
    """
    plain, traced = run_plain_and_traced(body, helpers=FOREIGN, env=ALL_INSTRUMENTORS)
    assert plain.line("seen") == {"seen": {"dummies": [], "registered": False}, "after": []}
    assert traced.returncode == 0, traced.stderr
    assert traced.line("seen") == plain.line("seen")
    # The subprocess it started is recorded, under a thread name of procscope's own.
    (spawn,) = [
        s for s in traced.db.spans() if s.attributes.get("procscope.lifecycle.role") == "spawn"
    ]
    assert spawn.attributes["thread.name"].startswith("foreign-")
