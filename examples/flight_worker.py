"""A worker that fails, for the flight recorder (docs/flight-recorder.md).

Run it at a production sample rate; the worker raises on its 301st message:

    procscope run --sample-rate 0.01 --db flight.db -- python examples/flight_worker.py
    procscope traces --db flight.db --recordings
    procscope messages --db flight.db --to worker --limit 5

At 1% about 3 of the 300 messages are sampled; the flight recorder writes out the rest of
the worker's last seconds when it fails. The program itself ends normally.
"""

from __future__ import annotations

import multiprocessing as mp

import procscope


@procscope.trace_state(name="tally")
class Tally:
    def __init__(self) -> None:
        self.last = None
        self.total = 0


def work(jobs: mp.Queue) -> None:
    tally = Tally()
    while True:
        item = jobs.get()
        if item == 300:
            raise ValueError(f"cannot handle {item}")
        tally.last = item
        tally.total += item


if __name__ == "__main__":
    jobs: mp.Queue = procscope.name(mp.Queue(), "jobs")
    worker = mp.Process(target=work, args=(jobs,), name="worker")
    worker.start()
    for i in range(301):
        jobs.put(i)
    worker.join()
    print(f"worker ended with exit code {worker.exitcode}")
