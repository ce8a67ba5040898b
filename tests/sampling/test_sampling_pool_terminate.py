"""The abnormal-end policies and a pool worker that its own pool terminated."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from procscope.processors.sampling import AbnormalEndPolicy, default_policy

POOL_END = {
    "procscope.process.exit.signal": 15,
    "procscope.process.exit.reason": "terminated_by_pool",
}


def _trace(p: Any, name: str, status: StatusCode | None = None, **attributes: Any) -> int:
    with p.tracer.start_as_current_span(name, attributes=attributes) as span:
        if status is not None:
            span.set_status(status, "set by the test")
    return span.get_span_context().trace_id  # type: ignore[no-any-return]


@pytest.mark.parametrize("make", [AbnormalEndPolicy, lambda: default_policy(0.0)])
def test_signal_explained_as_terminated_by_pool_is_not_an_abnormal_end(
    pipeline: Any, make: Any
) -> None:
    """SIGTERM + reason terminated_by_pool: dropped; bare SIGTERM or ERROR status: kept."""
    p = pipeline(make())
    by_pool = _trace(p, "exit pool worker", **POOL_END)
    bare = _trace(p, "exit killed worker", **{"procscope.process.exit.signal": 15})
    failed = _trace(p, "exit failed worker", StatusCode.ERROR, **POOL_END)
    kept = p.kept_trace_ids()
    assert bare in kept and failed in kept
    assert by_pool not in kept
