"""Issue 12's mp round trip, run by bench_round_trip.py and tests/tracedb/test_tracedb_ship.py:
the parent puts N ints on a multiprocessing.Queue, two workers double them onto a result
queue, the parent sums the results and joins the workers; prints the time from the
workers' start to their join. python round_trip.py METHOD N
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time


def worker(inq: mp.Queue[int | None], outq: mp.Queue[int]) -> None:
    while True:
        x = inq.get()
        if x is None:
            break
        outq.put(x * 2)


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
