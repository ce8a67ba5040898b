"""Issue 12's mp round trip, run by bench_round_trip.py and tests/tracedb/test_tracedb_ship.py:
the parent puts N ints on a multiprocessing.Queue, two workers double them onto a result
queue, the parent sums the results and joins the workers; prints the time from the
workers' start to their join. python round_trip.py METHOD N

Where /proc is readable it also prints, to stderr, the CPU each thread used: the
workers' threads when their loop ends (their exit is not included), the parent's after
the join (lines ``cpu ROLE THREAD SECONDS``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time


def print_thread_cpu(role: str) -> None:
    """``cpu ROLE THREAD SECONDS`` for each thread of this process (Linux's /proc)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        tids = os.listdir("/proc/self/task")
    except (OSError, ValueError, AttributeError):
        return
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    # (by its id, the process's own: threading may still give a fork child's main thread
    # the id it had in the parent)
    names[os.getpid()] = "MainThread"
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as file:
                stat = file.read()
        except OSError:
            continue  # (a thread that ended meanwhile)
        fields = stat[stat.rindex(")") + 2:].split()  # (utime and stime: fields 14 and 15)
        name = names.get(int(tid), stat[stat.index("(") + 1:stat.rindex(")")])
        seconds = (int(fields[11]) + int(fields[12])) / tick
        print(f"cpu {role} {name.replace(' ', '_')} {seconds:.3f}", file=sys.stderr)


def worker(inq: mp.Queue[int | None], outq: mp.Queue[int]) -> None:
    while True:
        x = inq.get()
        if x is None:
            break
        outq.put(x * 2)
    print_thread_cpu("worker")


if __name__ == "__main__":
    mp.set_start_method(sys.argv[1])
    n = int(sys.argv[2])
    inq: mp.Queue[int | None] = mp.Queue()
    outq: mp.Queue[int] = mp.Queue()
    t0 = time.perf_counter()
    workers = [mp.Process(target=worker, args=(inq, outq)) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(n):
        inq.put(i)
    for _ in workers:
        inq.put(None)
    assert sum(outq.get() for _ in range(n)) == n * (n - 1)
    for w in workers:
        w.join()
    print("inside", time.perf_counter() - t0, file=sys.stderr)
    print_thread_cpu("parent")
