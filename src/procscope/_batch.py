"""The SDK's batch span processor, except that a fork child starts no thread of its own
until it has a span to export.

The SDK's ``BatchProcessor`` restarts its worker thread in every fork child (an at-fork
hook), so a child forked by a program under procscope had a thread the plain program's
child does not have: CPython's ``test_clear_threads_states_after_fork`` counts them. Here
the child's worker starts with the child's first span (and a child that records nothing
never has one); a child's exit flush exports on its own helper thread, as before.

Only where the SDK has the shared ``opentelemetry.sdk._shared_internal.BatchProcessor``
(1.45 here), whose fork hook is ``_at_fork_reinit``, bound when the processor is made;
with SDKs without it the plain ``BatchSpanProcessor`` is used as it is.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import opentelemetry.sdk.trace.export as _sdk_export
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_SdkBatchProcessor: Any
try:
    from opentelemetry.sdk._shared_internal import BatchProcessor as _SdkBatchProcessor
except ImportError:  # an older SDK: no lazy start
    _SdkBatchProcessor = None

_making = threading.Lock()


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
        """SDK BatchProcessor whose fork child starts its worker at its first span."""

        def _at_fork_reinit(self) -> None:
            # As the SDK's, without starting the thread. Runs in the child (its at-fork
            # hook, or emit seeing another pid), where only the forking thread exists.
            self._export_lock = threading.Lock()
            self._worker_awaken = threading.Event()
            self._queue.clear()
            self._worker_thread = threading.Thread(
                name=f"OtelBatch{self._exporting}RecordProcessor",
                target=self.worker,
                daemon=True,
            )
            self._pid = os.getpid()
            self._start_lock = threading.Lock()
            # Until the first span, emit is this instance's own; after it, the class's
            # again: no cost per span once the worker runs.
            self.emit = self._first_emit_here

        def _first_emit_here(self, data: Any) -> None:
            with self._start_lock:
                if self.__dict__.pop("emit", None) is not None and not self._shutdown:
                    try:
                        self._worker_thread.start()
                    except RuntimeError:  # interpreter shutdown: the exit flush exports
                        pass
            base.emit(self, data)

        def shutdown(self, *args: Any, **kwargs: Any) -> Any:
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
