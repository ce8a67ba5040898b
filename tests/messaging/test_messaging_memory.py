"""No memory growth on the unsampled path, over a million messages."""

from __future__ import annotations

import gc
import queue
import tracemalloc
from typing import Any


def test_a_million_unsampled_messages_leave_no_memory_behind(
    recorder: Any, live_settings: Any
) -> None:
    """1,000,000 unsampled put+get pairs: traced memory does not grow and no span is made."""
    live_settings.sample_rate = 0.0
    q: queue.Queue[int] = queue.Queue()
    put, get = q.put, q.get
    for i in range(10_000):  # warm up: deque blocks, caches
        put(i)
        get()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1_000_000):
            put(i)
            get()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 64 * 1024, f"{growth} bytes more after a million messages"
    assert recorder.spans() == [] and "_procscope_side" not in q.__dict__
