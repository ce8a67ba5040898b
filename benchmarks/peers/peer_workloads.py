"""The five workloads of the peers benchmark, each a standalone program:

    python peer_workloads.py WORKLOAD --scale S --spin N

It times its own work inside the program (``time.perf_counter`` for wall,
``time.process_time`` for CPU, children's CPU as each child reports it at the end of its
work), so that the interpreter's start-up, procscope's set-up and any tool's dump at exit
are left out, checks its results, and prints one JSON line: ``wall``, ``cpu``,
``messages`` (queue messages the program sent, each with a receiver: what a complete
recording holds with both ends) and ``ok``. It exits 1 if a result is wrong.

This file lives outside procscope's package folders on purpose: procscope treats objects
made by its own package files as internal and does not record them.

``PEERS_SETUP=otel`` makes it set up OpenTelemetry's SDK and contrib's threading and
asyncio instrumentors first (``peer_otel.py``, only importable in the peers' virtualenv),
and run the timed part inside one root span.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

STOP = None


def spin(iterations: int) -> int:
    """A fixed amount of pure bytecode work (no call inside, so VizTracer logs none)."""
    total = 0
    for i in range(iterations):
        total += i
    return total


def _start_and_feed(workers: list[Any], tasks: Any, n: int) -> None:
    """Start the worker processes, put 0..n-1 on their queue, then one STOP each."""
    for w in workers:
        w.start()
    for i in range(n):
        tasks.put(i)
    for _ in workers:
        tasks.put(STOP)


# 1. mp round trip: the parent puts ints, two fork workers double them onto a result queue.


def _doubler(tasks: Any, results: Any) -> None:
    while True:
        item = tasks.get()
        if item is STOP:
            break
        results.put(item * 2)
    # The worker's CPU of its work, sent before its exit so that no exit work is counted.
    results.put(("cpu", time.process_time()))


def mp_round_trip(scale: float, spin_n: int) -> dict[str, Any]:
    n = max(10, int(20_000 * scale))
    ctx = multiprocessing.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    workers = [ctx.Process(target=_doubler, args=(tasks, results)) for _ in range(2)]
    _start_and_feed(workers, tasks, n)
    total, child_cpu, got = 0, 0.0, 0
    while got < n + len(workers):
        item = results.get()
        got += 1
        if isinstance(item, tuple):
            child_cpu += item[1]
        else:
            total += item
    return {"ok": total == n * (n - 1), "messages": 2 * (n + len(workers)),
            "child_cpu": child_cpu, "join": workers}


# 2. 4 threads on a queue.Queue, a fixed spin of work per item.


def threads_queue(scale: float, spin_n: int) -> dict[str, Any]:
    n = max(10, int(50_000 * scale))
    q: queue.Queue[int | None] = queue.Queue()
    sums = [0] * 4

    def worker(index: int) -> None:
        acc = 0
        while True:
            item = q.get()
            if item is STOP:
                break
            spin(spin_n)
            acc += item
        sums[index] = acc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(n):
        q.put(i)
    for _ in threads:
        q.put(STOP)
    for t in threads:
        t.join()
    return {"ok": sum(sums) == n * (n - 1) // 2, "messages": n + len(threads)}


# 3. 2,000 asyncio tasks in a chain: each gets from one asyncio.Queue and puts on the next.


async def _hop(inbox: asyncio.Queue[int], outbox: asyncio.Queue[int], items: int) -> None:
    for _ in range(items):
        outbox.put_nowait(await inbox.get() + 1)


async def _chain(tasks: int, items: int) -> int:
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(tasks + 1)]
    hops = [asyncio.create_task(_hop(queues[i], queues[i + 1], items)) for i in range(tasks)]
    for i in range(items):
        queues[0].put_nowait(i)
    total = 0
    for _ in range(items):
        total += await queues[-1].get()
    await asyncio.gather(*hops)
    return total


def asyncio_hops(scale: float, spin_n: int) -> dict[str, Any]:
    tasks = max(10, int(2_000 * scale))
    items = 25
    total = asyncio.run(_chain(tasks, items))
    return {"ok": total == items * (items - 1) // 2 + items * tasks,
            "messages": (tasks + 1) * items}


# 4. ProcessPoolExecutor, spawn start method, 200 small tasks.


def _square(x: int) -> int:
    return x * x


def process_pool(scale: float, spin_n: int) -> dict[str, Any]:
    n = max(10, int(200 * scale))
    ctx = multiprocessing.get_context("spawn")
    # shutdown(wait=True) at the end of the block waits for the workers' exit: their
    # exit work is inside this clock, and their CPU is counted from os.times().
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        total = sum(pool.map(_square, range(n)))
    return {"ok": total == sum(i * i for i in range(n)), "messages": None,
            "children_rusage": True}


# 5. Producer/consumer between processes: the parent produces, two fork consumers spin
#    a fixed ~200 microseconds of work per message.


def _consumer(tasks: Any, results: Any, spin_n: int) -> None:
    acc = 0
    while True:
        item = tasks.get()
        if item is STOP:
            break
        spin(spin_n)
        acc += item
    results.put((acc, time.process_time()))


def producer_consumer(scale: float, spin_n: int) -> dict[str, Any]:
    n = max(10, int(8_000 * scale))
    ctx = multiprocessing.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    # spin_n is calibrated for 20 us; this workload does ten times as much per message.
    workers = [ctx.Process(target=_consumer, args=(tasks, results, spin_n * 10))
               for _ in range(2)]
    _start_and_feed(workers, tasks, n)
    total, child_cpu = 0, 0.0
    for _ in workers:
        acc, cpu = results.get()
        total += acc
        child_cpu += cpu
    return {"ok": total == n * (n - 1) // 2, "messages": n + 2 * len(workers),
            "child_cpu": child_cpu, "join": workers}


WORKLOADS: dict[str, Callable[[float, int], dict[str, Any]]] = {
    "mp_round_trip": mp_round_trip,
    "threads_queue": threads_queue,
    "asyncio_hops": asyncio_hops,
    "process_pool": process_pool,
    "producer_consumer": producer_consumer,
}


def calibrate(target_s: float = 20e-6) -> int:
    """Iterations of spin() that take about target_s here (run once, plainly, by the
    benchmark, and passed to every configuration so that all do the same work)."""
    n = 20_000
    best = min(_timed_spin(n) for _ in range(7))
    return max(1, int(n * target_s / best))


def _timed_spin(n: int) -> float:
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


@contextlib.contextmanager
def _root_span() -> Iterator[None]:
    if os.environ.get("PEERS_SETUP") != "otel":
        yield
        return
    import peer_otel  # only in the peers' virtualenv

    with peer_otel.root_span():
        yield


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=[*WORKLOADS, "calibrate"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--spin", type=int, default=0)
    args = parser.parse_args(argv)
    if args.workload == "calibrate":
        print(json.dumps({"spin": calibrate()}))
        return 0
    otel = None
    if os.environ.get("PEERS_SETUP") == "otel":
        import peer_otel

        otel = peer_otel
        otel.setup()
    children_before = os.times()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with _root_span():
        result = WORKLOADS[args.workload](args.scale, args.spin)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + result.get("child_cpu", 0.0)
    for worker in result.get("join", ()):
        worker.join()
    if result.get("children_rusage"):
        after = os.times()
        cpu += (after.children_user + after.children_system
                - children_before.children_user - children_before.children_system)
    out = {"workload": args.workload, "wall": wall, "cpu": cpu,
           "messages": result["messages"], "ok": bool(result["ok"])}
    if otel is not None:
        out["spans"] = otel.finish()
    print(json.dumps(out), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
