"""procscope starts its threads at setup, not inside the program's code (issue 14).

CPython's own suites count threads before and after a test (test.support's
threading_setup/threading_cleanup, wait_threads_exit): a procscope thread started during a
test is a thread the test leaked. Under ``procscope run`` at max (tail sampling,
lifecycle spans for everything), a program whose work forks, starts threads, puts on
queues and ends traces counts as many threads after it as before, as plainly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PROCSCOPE = str(Path(sys.executable).parent / "procscope")

PROGRAM = """
import os, queue, threading
import multiprocessing

def work():
    q = queue.Queue()
    threads = [threading.Thread(target=q.put, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(4):
        q.get()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    process = multiprocessing.get_context("fork").Process(target=print, args=("child",))
    process.start()
    process.join()

before = (threading.active_count(), sorted(t.name for t in threading.enumerate()))
work()
after = (threading.active_count(), sorted(t.name for t in threading.enumerate()))
print("before", before)
print("after", after)
"""


def test_the_thread_count_is_the_same_before_and_after_the_programs_work(run_app: Any) -> None:
    """At max, a block that forks, starts threads, puts on queues and ends traces leaves
    the number (and names) of the program's threads as they were before it."""
    result = run_app(
        PROGRAM,
        prefix=[PROCSCOPE, "run", "--", "python"],  # the trace DB, in the test's folder
        env={"PROCSCOPE_SAMPLING": "tail", "PROCSCOPE_LIFECYCLE_SPANS": "all"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " (" in line)
    assert lines["before"] == lines["after"], result.stdout
