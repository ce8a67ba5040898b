"""What the flight recorder's span-error triggers add (issue 13): per span that ends, and
per unsampled put.

    python benchmarks/flight/bench_span_trigger.py [--quick]

1. ``RecordingSpanProcessor.on_end`` of an ended SDK span (not failed; a processor that
   does nothing behind) with the recorder off and on: the check a span pays, a global
   read and an identity test on its status. Rounds interleaved; the minimum of each.
2. A put-shaped function with and without the ``try`` around the original call that the
   unsampled ``queue.Queue`` put now has (its ``except`` works only while the recorder is
   on): free from Python 3.11 (zero-cost exceptions), a few ns on 3.10. Run this file with
   each interpreter to see both.
"""

from __future__ import annotations

import sys
import timeit
from typing import Any

QUICK = "--quick" in sys.argv
ROUNDS = 5 if QUICK else 15
NUMBER = 100_000 if QUICK else 200_000


class _Nothing:
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def _best(call: Any) -> float:
    """ns a call, the best of three runs of NUMBER."""
    return min(timeit.repeat(call, number=NUMBER, repeat=3)) / NUMBER * 1e9


def on_end_check() -> tuple[float, float]:
    from opentelemetry.sdk.trace import TracerProvider

    from procscope.core import flight
    from procscope.core.recorder import RecordingSpanProcessor

    span = TracerProvider().get_tracer("bench").start_span("s")
    span.end()
    processor = RecordingSpanProcessor([_Nothing()])
    off, on = [], []
    for _ in range(ROUNDS):
        flight.stop()
        off.append(_best(lambda: processor.on_end(span)))
        flight.start()
        on.append(_best(lambda: processor.on_end(span)))
    flight.stop()
    processor.shutdown()
    return min(off), min(on)


def _original(q: Any, item: Any, block: bool, timeout: Any) -> None:
    return None


def _put_plain(q: Any, item: Any, block: bool = True, timeout: Any = None) -> Any:
    add = None  # noqa: F841 -- (as the put has it: the same local store)
    return _original(q, item, block, timeout)


def _put_with_try(q: Any, item: Any, block: bool = True, timeout: Any = None) -> Any:
    add = None
    try:
        return _original(q, item, block, timeout)
    except Exception as exc:
        if add is not None:
            print(exc)
        raise


def put_try() -> tuple[float, float]:
    plain, tried = [], []
    for _ in range(ROUNDS):
        plain.append(_best(lambda: _put_plain(1, 2)))
        tried.append(_best(lambda: _put_with_try(1, 2)))
    return min(plain), min(tried)


def main() -> None:
    version = sys.version.split()[0]
    print(f"Python {version}, {ROUNDS} interleaved rounds, best of 3 x {NUMBER:,} each\n")
    print("| measure | without | with | added |")
    print("| --- | --- | --- | --- |")
    try:
        off, on = on_end_check()
        print(f"| on_end of a span, recorder off / on | {off:.1f} ns | {on:.1f} ns | "
              f"{on - off:+.1f} ns |")
    except ImportError:  # (an interpreter without the project's packages: part 2 only)
        print("| on_end of a span | (procscope not importable here) | | |")
    plain, tried = put_try()
    print(f"| a put-shaped call, without / with the try | {plain:.1f} ns | {tried:.1f} ns | "
          f"{tried - plain:+.1f} ns |")


if __name__ == "__main__":
    main()
