"""An unsampled asyncio task's end in the flight recorder's ring, as names, not objects.

Made once per task, on the event loop's thread, so it stays small: ``(end time, TASK's
code, thread ident, task name, coroutine name, start time)``. The span's attributes
(the lifecycle kind and role, the task's name and function) are made at a dump; the
thread's id and name come from the record's thread ident, as for every flight record.
Building them at the task's end (a dict, the thread's native id and name, the task's
given name) was about 2 us of every unsampled task's 3 in the flight recorder.

Imported at set-up (not with asyncio): a parent that recovers a dead child's records
must know the kind even if it never imports asyncio itself.
"""

from __future__ import annotations

from typing import Any

from procscope.core import flight
from procscope.core.flight import F_A, F_B, F_C, F_TIME

from ._runtime import KIND, ROLE, TASK_FUNCTION, TASK_NAME


class TaskKind(flight.FlightKind):
    """The end of an asyncio task that had no span (an unsampled one)."""

    name = "task"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        from opentelemetry.trace import SpanKind

        end = record[F_TIME]
        start = record[F_C] or end
        task_name = record[F_A]
        attributes = {KIND: "task", ROLE: "run", TASK_NAME: task_name,
                      TASK_FUNCTION: record[F_B]}
        return ("task " + task_name, SpanKind.INTERNAL, min(start, end), end, attributes,
                (), None)


TASK = TaskKind()
