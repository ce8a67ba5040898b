"""procscope's demo: orders flow from a dispatcher through worker processes to a ledger.

- the dispatcher (this process) puts orders on the queue "orders";
- two pricer processes take orders, price them and put the results on "results";
- a ledger process keeps a Ledger object, traced with procscope.trace_state, and applies
  every priced order to it;
- one order is poisoned: the pricer that takes it crashes with an exception.

Run it under procscope (``procscope demo`` does), then ask what happened:
``procscope processes``, ``procscope messages --queue orders``, ``procscope state ledger``.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from opentelemetry import trace

import procscope

ORDERS = [
    {"id": 1, "sku": "apple", "qty": 3},
    {"id": 2, "sku": "pear", "qty": 1},
    {"id": 3, "sku": "plum", "qty": 12},
    {"id": 4, "sku": "fig", "qty": 2},
    {"id": 5, "sku": "POISON", "qty": 1},
]
PRICES = {"apple": 0.5, "pear": 0.75, "plum": 0.2, "fig": 1.25}


class Ledger:
    """The ledger worker's state: what it has been paid, for how many orders."""

    def __init__(self) -> None:
        self.total = 0.0
        self.orders = 0
        self.last_order: int | None = None

    def apply(self, result: dict[str, Any]) -> None:
        self.total = round(self.total + result["amount"], 2)
        self.orders += 1
        self.last_order = result["id"]


def pricer(orders: Any, results: Any) -> None:
    """Price orders until told to stop; a poisoned order makes it crash."""
    while True:
        order = orders.get()
        if order is None:
            return
        if order["sku"] not in PRICES:
            raise RuntimeError(f"cannot price {order['sku']!r} (order {order['id']})")
        time.sleep(0.01)  # pricing takes a moment
        results.put({"id": order["id"], "amount": PRICES[order["sku"]] * order["qty"]})


def ledger_worker(results: Any, done: Any) -> None:
    """Apply every priced order to the ledger; report the final state at the end."""
    ledger = procscope.trace_state(Ledger(), name="ledger")
    while True:
        result = results.get()
        if result is None:
            break
        ledger.apply(result)
    done.send({"total": ledger.total, "orders": ledger.orders})


def main() -> None:
    # One span around the whole run makes every spawn and message one trace, which
    # `procscope show` prints as a single tree.
    with trace.get_tracer("procscope.demo").start_as_current_span("dispatch orders"):
        run_pipeline()


def run_pipeline() -> None:
    ctx = mp.get_context("spawn")
    orders = procscope.name(ctx.Queue(), "orders")
    results = procscope.name(ctx.Queue(), "results")
    done_recv, done_send = ctx.Pipe(duplex=False)
    procscope.name(done_send, "ledger-report")

    ledger = ctx.Process(target=ledger_worker, args=(results, done_send), name="ledger")
    pricers = [
        ctx.Process(target=pricer, args=(orders, results), name=f"pricer-{n}") for n in (1, 2)
    ]
    ledger.start()
    for process in pricers:
        process.start()
    for order in ORDERS:
        orders.put(order)
    for _ in pricers:
        orders.put(None)
    for process in pricers:
        process.join()
    results.put(None)
    report = done_recv.recv()
    ledger.join()

    print(f"ledger: {report['orders']} orders, total {report['total']:.2f}")
    for process in pricers:
        print(f"{process.name}: exit code {process.exitcode}")


if __name__ == "__main__":
    main()
