"""The recorder tests lose records on purpose; the process's loss counters (which a trace
DB written later in the same test process would store) are put back after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from procscope.core import losses


@pytest.fixture(autouse=True)
def losses_kept_to_the_test() -> Iterator[None]:
    counters = losses._here()
    before = dict(counters.by_reason)
    yield
    with counters.lock:
        counters.by_reason.clear()
        counters.by_reason.update(before)
