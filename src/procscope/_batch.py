"""The SDK's batch span processor, except that a fork child starts no thread of its own
until it has a span to export.

The SDK's ``BatchProcessor`` restarts its worker thread in every fork child (an at-fork
hook), so a child forked by a program under procscope had a thread the plain program's
child does not have: CPython's ``test_clear_threads_states_after_fork`` counts them. Here
the child's worker starts with the child's first span (and a child that records nothing
never has one); a child's exit flush exports on its own helper thread, as before.

And nothing is dropped anonymously. The SDK's processor, its queue full, drops the oldest
span with a ``logging.warning("Queue full, dropping Span.")`` (13-19 us each, then
discarded as a duplicate by the SDK's log filter) and nobody learns that the recording is
incomplete. Here a full queue follows the ``overflow`` setting (read live, only when the
queue is full): ``drop`` counts the new span lost (:mod:`procscope.core.losses`) and
drops it; ``wait`` makes the ending thread wait for room, at most :data:`WAIT_LIMIT_S`,
then counts and drops it. It never waits where waiting could not end well: on the
export thread itself, at interpreter shutdown, before the worker runs (a fork child's
first span, an at-fork hook), after shutdown; there it counts and drops. After one wait
that ran out, spans that find the queue still full with the same oldest span (the
exporter has not taken a batch since) are dropped at once, so a stalled exporter costs
the program one wait, not one per span.

Only where the SDK has the shared ``opentelemetry.sdk._shared_internal.BatchProcessor``
(1.34 and later; 1.45 here), whose fork hook is ``_at_fork_reinit``, bound when the
processor is made; with SDKs without it the plain ``BatchSpanProcessor`` is used as it is
(its overflow is then the SDK's).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from typing import Any

import opentelemetry.sdk.trace.export as _sdk_export
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.util._once import Once

from procscope.core import cheap_child, handoff, inherited, losses, shared_state
from procscope.core.guard import log_internal_error

_SdkBatchProcessor: Any
try:
    from opentelemetry.sdk._shared_internal import BatchProcessor as _SdkBatchProcessor
except ImportError:  # an older SDK: no lazy start
    _SdkBatchProcessor = None

_making = threading.Lock()

# How long a thread ending a span waits for room in a full queue under the "wait" policy,
# with no batch taken by the exporter meanwhile, before the span is dropped and counted:
# long enough to ride out a slow batch (the trace DB's busy timeout is 5 s), short enough
# that a stalled exporter cannot stop the program. While batches do leave, the thread waits
# on, up to PROGRESS_WAIT_CAP_S in all (the recorder's PROGRESS_WAIT_CAP).
WAIT_LIMIT_S = 5.0
PROGRESS_WAIT_CAP_S = 60.0
# Polling for room: the SDK's worker signals nothing when it takes a batch, and a full
# queue is the rare path, where a few hundred microseconds of latency do not matter.
_FIRST_PAUSE_S = 0.0005
_LONGEST_PAUSE_S = 0.01
# At shutdown, no new spool file is claimed after this long (one export already under
# way finishes; the shutdown itself is bounded by its caller).
HANDOFF_AT_SHUTDOWN_S = 2.0


def make_batch_span_processor(exporter: Any, **options: Any) -> BatchSpanProcessor:
    """A ``BatchSpanProcessor`` (raises what it raises for bad options)."""
    lazy = _lazy_class()
    if lazy is None or getattr(_sdk_export, "BatchProcessor", None) is not _SdkBatchProcessor:
        return BatchSpanProcessor(exporter, **options)
    # BatchSpanProcessor makes its BatchProcessor by the module's global name, and the
    # processor's fork hook binds _at_fork_reinit as it is made: the subclass must be the
    # one made. The name is swapped for the moment of the call only (setup, once).
    with _making:
        _sdk_export.BatchProcessor = lazy  # type: ignore[attr-defined,misc,assignment]
        try:
            return BatchSpanProcessor(exporter, **options)
        finally:
            _sdk_export.BatchProcessor = _SdkBatchProcessor  # type: ignore[attr-defined,misc,assignment]


_lazy: list[Any] = []


class _NotStarted:
    """Stands for a worker thread that never ran, for the SDK's shutdown to join."""

    ident = None

    def join(self, timeout: float | None = None) -> None:
        return None

    def is_alive(self) -> bool:
        return False


def _lazy_class() -> Any:
    if _SdkBatchProcessor is None or not hasattr(_SdkBatchProcessor, "_at_fork_reinit"):
        return None
    if not _lazy:
        _lazy.append(_make_lazy_class(_SdkBatchProcessor))
    return _lazy[0]


def _make_lazy_class(base: Any) -> Any:
    class ChildStartsLazily(base):  # type: ignore[misc,valid-type]
        """SDK BatchProcessor whose fork child starts its worker at its first span, and
        whose full queue waits or drops as the overflow setting says, counting what it
        drops (see the module's docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Unbounded: emit() keeps it to max_queue_size itself. The SDK's deque(maxlen)
            # would silently push out the oldest span when two threads both found one
            # place left; here they both get in (a few over the size at most).
            self._queue: collections.deque[Any] = collections.deque()
            # The oldest queued span when a wait last ran out (see _no_room).
            self._stalled_on: Any = None
            self.procscope_in_flight: list[Any] | None = None
            self.procscope_last_export_ok = True  # the last export's outcome
            if not hasattr(self, "_bsp_reset_once"):  # emit() below uses the SDK's own
                self._bsp_reset_once = Once()

        def emit(self, data: Any) -> None:
            # The SDK's emit, but for a full queue and after shutdown.
            if self._shutdown:
                losses.count_lost(1, losses.AFTER_SHUTDOWN)
                return
            if self._pid != os.getpid():
                self._bsp_reset_once.do_once(self._at_fork_reinit)
            queue = self._queue
            if len(queue) >= self._max_queue_size and self._no_room():
                return
            queue.appendleft(data)
            if len(queue) >= self._max_export_batch_size and not self._worker_awaken.is_set():
                self._worker_awaken.set()

        def _no_room(self) -> bool:
            """True when the span must be dropped (counted here); False once there is
            room (after waiting, under the wait policy). Never raises into the program's
            span end."""
            try:
                return self._wait_for_room()
            except Exception:  # noqa: BLE001 -- the guard: count the span, log once
                log_internal_error()
                self._dropped()
                return True

        def _dropped(self) -> None:
            losses.count_lost(1, losses.QUEUE_FULL)
            # The SDK's own processor metrics count it too, as the SDK's drop would.
            drop_items = getattr(getattr(self, "_metrics", None), "drop_items", None)
            if drop_items is not None:
                drop_items(1)

        def _wait_for_room(self) -> bool:
            queue = self._queue
            oldest = queue[-1] if queue else None
            if (
                shared_state.settings().overflow != "wait"
                or oldest is self._stalled_on
                or not self._worker_thread.is_alive()
                or threading.get_ident() == self._worker_thread.ident
                or sys.is_finalizing()
            ):
                self._dropped()
                return True
            # An exporter that says how long one export can take at most (the trace DB:
            # its busy timeout times its attempts) is not stalled before that.
            limit = max(WAIT_LIMIT_S, float(getattr(self._exporter, "longest_export_s", 0)))
            now = time.monotonic()
            deadline, give_up = now + limit, now + PROGRESS_WAIT_CAP_S
            pause = _FIRST_PAUSE_S
            while len(queue) >= self._max_queue_size:
                self._worker_awaken.set()
                now = time.monotonic()
                if queue and queue[-1] is not oldest and self.procscope_last_export_ok:
                    # The exporter stored a batch: progress, so the no-progress limit
                    # starts again (the cap still holds). A batch taken and failed (a
                    # backend down) is no progress.
                    oldest = queue[-1]
                    deadline = now + limit
                left = min(deadline, give_up) - now
                if left <= 0 or self._shutdown:
                    self._stalled_on = queue[-1] if queue else None
                    self._dropped()
                    return True
                time.sleep(min(pause, left))
                pause = min(pause * 2, _LONGEST_PAUSE_S)
            return False

        def _at_fork_reinit(self) -> None:
            # As the SDK's, without starting the thread. Runs in the child (its at-fork
            # hook, or emit seeing another pid), where only the forking thread exists.
            self._export_lock = threading.Lock()
            self._worker_awaken = threading.Event()
            # The parent's spans, kept aside to be freed a little at a time (freeing them
            # here made the child's start wait: procscope.core.inherited).
            inherited.keep(self._queue)
            self._queue = collections.deque()
            self._stalled_on = None
            self.procscope_in_flight = None
            self.procscope_last_export_ok = True
            self._worker_thread = threading.Thread(
                name=f"OtelBatch{self._exporting}RecordProcessor",
                target=self.worker,
                daemon=True,
            )
            self._pid = os.getpid()
            self._start_lock = threading.Lock()
            # Until the first span, emit is this instance's own; after it, the class's
            # again: no cost per span once the worker runs.
            self.emit = self._first_emit_here  # type: ignore[method-assign]

        def _first_emit_here(self, data: Any) -> None:
            with self._start_lock:
                if self.__dict__.pop("emit", None) is not None and not self._shutdown:
                    try:
                        self._worker_thread.start()
                    except RuntimeError:  # interpreter shutdown: the exit flush exports
                        pass
            self.emit(data)

        def _export(self, batch_strategy: Any) -> None:
            # The SDK's, but the batch being sent is kept where an exit flush out of its
            # budget finds it (procscope.core.handoff.take_queued), and the top process's
            # worker looks at the hand-off spool on its schedule.
            if not hasattr(self, "_metrics"):  # an SDK older than this copy
                base._export(self, batch_strategy)
                return
            with self._export_lock:
                iteration = 0
                while self._should_export_batch(batch_strategy, iteration):
                    iteration += 1
                    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
                    count = min(self._max_export_batch_size, len(self._queue))
                    batch = [self._queue.pop() for _ in range(count)]
                    self._metrics.finish_items(count)
                    self.procscope_in_flight = batch
                    try:
                        result = self._exporter.export(batch)
                        self.procscope_last_export_ok = result == SpanExportResult.SUCCESS
                    except Exception:
                        self.procscope_last_export_ok = False
                        logging.getLogger(__name__).exception("Exception while exporting.")
                    self.procscope_in_flight = None
                    detach(token)
            if threading.current_thread() is self._worker_thread and handoff.due():
                handoff.collect(self._exporter)
                # The runs of cheap children that no one here reaped (grandchildren,
                # children never waited for): stored while the program runs.
                try:
                    cheap_child.collect_ended(changed_only=True)
                except Exception:  # noqa: BLE001 -- never disturb the export
                    log_internal_error()

        def shutdown(self, *args: Any, **kwargs: Any) -> Any:
            if not self._shutdown and handoff.survivor():
                # The top process, or any once it is gone, exports what exited children
                # handed off.
                handoff.collect(self._exporter, time.monotonic() + HANDOFF_AT_SHUTDOWN_S)
            if self._worker_thread.ident is None and not self._shutdown:
                # A child that never started its worker: export here what the worker
                # would have exported at its end; the SDK's shutdown then joins nothing.
                self.__dict__.pop("emit", None)
                self.force_flush()
                self._worker_thread = _NotStarted()  # type: ignore[assignment]
            return base.shutdown(self, *args, **kwargs)

    ChildStartsLazily.__qualname__ = ChildStartsLazily.__name__ = "BatchProcessor"
    ChildStartsLazily.__module__ = __name__
    return ChildStartsLazily
