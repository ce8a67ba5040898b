"""The handle ``procscope.setup()`` returns, and the pipeline it owns."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from opentelemetry import trace

from procscope.core import (
    _flight_mirror,
    _flight_signal,
    _flight_stage,
    cheap_child,
    flight,
    handoff,
    losses,
    runs,
    shared_state,
)
from procscope.core.forksafe import ForkSafeLock
from procscope.core.guard import handle_internal_errors, warn_once
from procscope.core.recorder import RecordingSpanProcessor
from procscope.core.settings import (
    ENV_CAPTURE_CONTENT,
    ENV_FLIGHT_MEMORY,
    ENV_FLIGHT_RECORDER,
    ENV_FLIGHT_WINDOW,
    ENV_LEVEL,
    ENV_OVERFLOW,
    ENV_SAMPLE_RATE,
    OVERFLOW_DEFAULT_TEXT,
    Settings,
    parse_bool,
    parse_duration,
    parse_level,
    parse_overflow,
    parse_rate,
    parse_size,
    resolve_one,
)
from procscope.core.threadinfo import on_main_thread

from . import _instrumentors, _run_notice
from ._pipeline import ProcscopeTracerProvider, build_processors, build_resource, record_sink
from ._sampler import AdjustableRateSampler

_logger = logging.getLogger("procscope")

# How long a SIGTERM may hold up the program's death to flush what it recorded.
SIGTERM_FLUSH_MILLIS = 5_000
# How long procscope.shutdown(), and the provider's shutdown at exit, may take: the SDK's
# batch processors wait up to 30 s for their worker, and an exporter up to its own timeout,
# when the backend is down. Past the budget, what is unsent is dropped (docs/lifecycle.md).
SHUTDOWN_SECONDS = 3.0
# Any other process of the program (a fork child that exits through atexit, a spawn
# child, a Python subprocess): the exit flush budget of the lifecycle runtime.
CHILD_SHUTDOWN_SECONDS = 0.5


# An export that keeps going (the queue shrinks: a slow disk, a big last batch, a busy
# machine) is waited for past the budget, up to this, as the SDK's own shutdown would.
SHUTDOWN_MAX_SECONDS = 30.0
PROGRESS_POLL_SECONDS = 0.1
PROGRESS_WINDOW_SECONDS = 1.0


def queued_spans(processors: Any) -> int:
    """Spans waiting in the SDK batch processors among ``processors`` and behind them."""
    pending, count, seen = list(processors), 0, 0
    while pending and seen < 32:
        processor = pending.pop()
        seen += 1
        batch_processor = getattr(processor, "_batch_processor", None)
        queue = getattr(batch_processor, "_queue", None)
        if queue is not None:
            count += len(queue)
        # The trace DB's span backlog, made into rows at the end (_backlog.py), counted as
        # what this process has indexed so far, negated: its total is known only once the
        # exporter looks, and what matters here is that the count goes down while work
        # is done (a count that only goes back up, such as a queue that a thread keeps
        # refilling, is not progress).
        count -= getattr(getattr(batch_processor, "_exporter", None), "spans_indexed", 0)
        pending.extend(getattr(processor, "_span_processors", None) or ())
        if isinstance(processor, RecordingSpanProcessor):
            count += processor.pending()
            pending.extend(processor.downstream)
        downstream = getattr(processor, "_next", None)
        if downstream is not None:
            pending.append(downstream)
    return count


def run_within(
    seconds: float, fn: Any, name: str, progress: Any = None, at_most: float = 0.0
) -> bool:
    """Run ``fn()`` on a daemon helper thread, waiting for it ``seconds``; past that, for
    as long as ``progress()`` (a count of what is left) went down in the last second (or
    the last ``seconds``, if shorter), up to ``at_most`` in all.

    True when it finished. The helper is left behind (it dies with the process) when it
    does not: a backend that never answers must not hold the program's end."""
    try:
        helper = threading.Thread(target=fn, name=name, daemon=True)
        helper.start()
    except RuntimeError:  # no new threads at interpreter shutdown (3.12+): run it here
        return _run_here_within(fn, max(seconds, 0.01))
    if progress is None:
        helper.join(seconds)
        return not helper.is_alive()
    started = last_progress = time.monotonic()
    window = min(PROGRESS_WINDOW_SECONDS, seconds)
    left = progress()
    while helper.is_alive():
        helper.join(PROGRESS_POLL_SECONDS)
        now = time.monotonic()
        now_left = progress()
        if now_left < left:
            left, last_progress = now_left, now
        if now - started >= seconds and (now - last_progress > window or now - started >= at_most):
            break
    return not helper.is_alive()


class _OutOfTime(BaseException):
    """Raised by the SIGALRM handler of _run_here_within (a BaseException: the SDK's
    ``except Exception`` blocks must not swallow it)."""


def _run_here_within(fn: Any, seconds: float) -> bool:
    """``fn()`` on this thread, cut off after ``seconds`` by SIGALRM where that is ours to
    use: the main thread, SIGALRM at its default action, no interval timer running (the
    program's own alarm is never touched). Used at interpreter shutdown, where Python 3.12
    and later start no new thread: there a shutdown joining an export stuck on a silent
    backend waited for the exporter's own timeout (10 s for OTLP). Elsewhere ``fn()`` runs
    unbounded, as before. True when it finished."""
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )
    if not usable:
        fn()
        return True

    def out_of_time(signum: int, frame: Any) -> None:
        raise _OutOfTime

    signal.signal(signal.SIGALRM, out_of_time)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return True
    except _OutOfTime:
        return False
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _wait_for_recoveries() -> None:
    """A dead child's records being recovered (its mirror or staged row) on a helper
    thread: waited for before the processors close, which wait for dumps only while they
    hand spans on (a recovery reads and pairs every record before its first span)."""
    spans = sys.modules.get("procscope.core._flight_spans")
    if spans is not None:
        with handle_internal_errors():
            spans.wait_for_recoveries()


def _collect_cheap_children() -> None:
    """The runs of cheap children not yet made into spans (one never waited for, a
    grandchild), made now, before the exporters close; none allowed from here on."""
    cheap_child.disallow_children()
    with handle_internal_errors():
        cheap_child.collect_ended()


def _shutdown_at_exit(provider: Any, setup_pid: int) -> None:
    # A spawn or forkserver child, a Python subprocess, set itself up (setup_pid is its
    # own) but is a child of the program too: its exit flush already handed what it
    # could not export to the top process (procscope.core.handoff).
    top = os.getpid() == setup_pid and handoff.is_top_process()
    seconds = SHUTDOWN_SECONDS if top else CHILD_SHUTDOWN_SECONDS
    with handle_internal_errors():
        _flight_signal.process_ended()  # (its marker for procscope dump)
    multi = getattr(provider, "_active_span_processor", None)
    if top:
        _collect_cheap_children()
        _wait_for_recoveries()
    with handle_internal_errors():
        run_within(
            seconds,
            provider.shutdown,
            "procscope-shutdown",
            lambda: queued_spans([multi]),
            SHUTDOWN_MAX_SECONDS,
        )
        if top:
            handoff.remove_if_empty()
            _run_notice.announce(runs.current_id())


def _flight_changes(
    settings: Settings, recorder: Any, window: Any, memory: Any, env: dict[str, str]
) -> dict[str, Any]:
    """configure()'s flight recorder keywords, each checked as setup() checks it."""
    changes: dict[str, Any] = {}
    if recorder is not None:
        changes["flight_recorder"] = resolve_one(
            "flight_recorder", ENV_FLIGHT_RECORDER, recorder, parse_bool,
            settings.flight_recorder, env,
        )
    if window is not None:
        changes["flight_window"] = resolve_one(
            "flight_window", ENV_FLIGHT_WINDOW, window, parse_duration, settings.flight_window,
            env,
        )
    if memory is not None:
        changes["flight_memory"] = resolve_one(
            "flight_memory", ENV_FLIGHT_MEMORY, memory, parse_size, settings.flight_memory, env
        )
    return changes


class Scope:
    """What one ``procscope.setup()`` installed: settings, provider, processors.

    Use :func:`procscope.configure` and :func:`procscope.shutdown` (or the methods of the
    same names here) to change or end it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processors: list[Any] = []
        self.sampler: AdjustableRateSampler | None = None
        self.owns_provider = False
        self.tracer_provider: Any = None
        self._sigterm_installed = False
        self._sigterm_pid = 0
        self._closed = False
        self.run_attributes: dict[str, str] = {}
        # configure() and shutdown() (a fork child's exit too): new in each process.
        self._lock = ForkSafeLock()

    # -- building -----------------------------------------------------------------------

    def start(self) -> None:
        # Joined or started before the settings are published: they carry the run id.
        self.run_attributes = runs.begin(self.settings.capture_content)
        _run_notice.claim(self.settings.db, self.settings.exporters)
        live = shared_state.settings()
        live.level = self.settings.level
        live.sample_rate = self.settings.sample_rate
        live.capture_content = self.settings.capture_content
        live.overflow = self.settings.overflow_policy
        live.configured = True
        self._publish_settings()

        self.tracer_provider = self._install_provider()
        # One recorder in front of the exporters' processors: instrumentors append
        # records, its drain thread makes them into spans (procscope.core.recorder).
        processors = build_processors(self.settings)
        self.processors = [RecordingSpanProcessor(
            processors,
            overflow=getattr(self.settings, "overflow_policy", None) or "wait",
            sink=(sink := record_sink(self.settings, processors)),
            idle=getattr(getattr(sink, "__self__", None), "index_when_idle", None),
        )]
        for processor in self.processors:
            self.tracer_provider.add_span_processor(processor)
        _instrumentors.apply_level(self.settings.level, self.tracer_provider)
        self._install_sigterm_flush()
        self._apply_flight_recorder()
        # Python subprocesses that record nothing but their run skip setting up a
        # pipeline: this process makes their spans (procscope.core.cheap_child). Not
        # under tail sampling (a child's span would bypass the sampler's buffer), nor
        # under a provider of the program's (its processors would not see them).
        if self.owns_provider and handoff.is_top_process() and self.settings.sampling != "tail":
            cheap_child.allow_children()

    def _apply_flight_recorder(self) -> None:
        """Start or stop the flight recorder (docs/flight-recorder.md) as the settings say."""
        settings = self.settings
        if settings.flight_recorder_on:
            current = flight.settings()
            if current != (settings.flight_window, settings.flight_memory):
                flight.start(settings.flight_window, settings.flight_memory)
            _flight_signal.install()
        else:
            flight.stop()
            _flight_signal.uninstall()

    def _publish_settings(self) -> None:
        """Make the settings the ones every child process starts with.

        Written into this process's environment, which every kind of child inherits:
        fork, spawn and forkserver children, and Python subprocesses, whatever starts them.
        """
        shared_state.get().scope_settings = self.settings
        os.environ.update(self.settings.as_environ())
        if self.settings.overflow is None:
            # Not given (or given badly, warned about once here): children follow their
            # sample rate, as this process does, and do not warn again.
            os.environ.pop(ENV_OVERFLOW, None)

    def _install_provider(self) -> Any:
        current = trace.get_tracer_provider()
        if getattr(current, "_procscope_owned", False):
            # Set up again after a shutdown in the same process: the global provider can
            # be set only once, so ours is reused with a fresh set of processors.
            self.owns_provider = True
            self.sampler = current.sampler  # type: ignore[attr-defined]
            if isinstance(self.sampler, AdjustableRateSampler):
                self.sampler.set_rate(self.settings.sample_rate)
            return current
        if hasattr(current, "add_span_processor"):
            warn_once(
                "existing-provider",
                "procscope: the program installed its own TracerProvider; procscope adds "
                "its span processors to it and keeps its sampler and resource",
            )
            return current
        if not isinstance(current, trace.ProxyTracerProvider):
            warn_once(
                "foreign-provider",
                "procscope: the program's TracerProvider %s takes no span processors; "
                "procscope cannot record to it",
                type(current).__name__,
            )
        self.sampler = AdjustableRateSampler(self.settings.sample_rate)
        # Shut down at exit by procscope, within a budget, not by the SDK's unbounded hook.
        provider = ProcscopeTracerProvider(
            resource=build_resource(self.run_attributes),
            sampler=self.sampler,
            shutdown_on_exit=False,
        )
        atexit.register(_shutdown_at_exit, provider, os.getpid())
        provider._procscope_owned = True  # type: ignore[attr-defined]
        trace.set_tracer_provider(provider)
        self.owns_provider = True
        return provider

    # -- SIGTERM ------------------------------------------------------------------------

    def _install_sigterm_flush(self) -> None:
        """Flush on SIGTERM, only where the program left SIGTERM at its default.

        The default action kills the process without running atexit, losing every span
        still queued. A handler of the program's own is never replaced: if it exits
        through sys.exit, the provider's atexit hook flushes anyway.
        """
        if not on_main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._sigterm_installed = True
            self._sigterm_pid = os.getpid()
        except (ValueError, OSError, AttributeError):
            pass

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # The handler runs on the main thread between two bytecodes, possibly while that
        # thread holds a batch processor's export lock (a plain Lock): flushing here
        # directly could wait on ourselves forever. A helper thread flushes instead, and
        # we wait for it for at most the flush budget.
        # A fork child inherits this handler, and with it the parent's processors, whose
        # queues may still hold the parent's spans until the SDK resets them in the child:
        # flushing there would export the parent's spans twice. Children are flushed by
        # the lifecycle instrumentor, which knows what is theirs.
        if os.getpid() == self._sigterm_pid:
            with handle_internal_errors():
                flusher = threading.Thread(
                    target=self.force_flush,
                    args=(SIGTERM_FLUSH_MILLIS,),
                    name="procscope-sigterm-flush",
                    daemon=True,
                )
                flusher.start()
                flusher.join(SIGTERM_FLUSH_MILLIS / 1000)
        # Die as SIGTERM would have made us die, so the parent sees the same status.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _remove_sigterm_flush(self) -> None:
        if not self._sigterm_installed:
            return
        self._sigterm_installed = False
        try:
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            pass

    # -- live changes -------------------------------------------------------------------

    def configure(
        self,
        *,
        level: Any = None,
        sample_rate: Any = None,
        capture_content: Any = None,
        overflow: Any = None,
        flight_recorder: Any = None,
        flight_window: Any = None,
        flight_memory: Any = None,
    ) -> None:
        """Change settings while the program runs; they apply to new spans."""
        live = shared_state.settings()
        env: dict[str, str] = {}  # keywords only: the environment was read at setup
        with self._lock:
            if self._closed:
                warn_once("configure-after-shutdown", "procscope: configure() after shutdown()")
                return
            changes: dict[str, Any] = {}
            if level is not None:
                changes["level"] = resolve_one(
                    "level", ENV_LEVEL, level, parse_level, self.settings.level, env
                )
            if sample_rate is not None:
                changes["sample_rate"] = resolve_one(
                    "sample_rate",
                    ENV_SAMPLE_RATE,
                    sample_rate,
                    parse_rate,
                    self.settings.sample_rate,
                    env,
                )
            if capture_content is not None:
                changes["capture_content"] = resolve_one(
                    "capture_content",
                    ENV_CAPTURE_CONTENT,
                    capture_content,
                    parse_bool,
                    self.settings.capture_content,
                    env,
                )
            if overflow is not None:
                changes["overflow"] = resolve_one(
                    "overflow",
                    ENV_OVERFLOW,
                    overflow,
                    parse_overflow,
                    self.settings.overflow,
                    env,
                    default_text=OVERFLOW_DEFAULT_TEXT
                    if self.settings.overflow is None
                    else None,
                )
            changes.update(_flight_changes(self.settings, flight_recorder, flight_window,
                                           flight_memory, env))
            self.settings = Settings(**{**self.settings.__dict__, **changes})
            self._publish_settings()
            live.capture_content = self.settings.capture_content
            live.overflow = self.settings.overflow_policy
            for processor in self.processors:
                if isinstance(processor, RecordingSpanProcessor):
                    processor.overflow = self.settings.overflow_policy
            live.sample_rate = self.settings.sample_rate
            if self.sampler is not None:
                self.sampler.set_rate(self.settings.sample_rate)
            self._apply_flight_recorder()
            if live.level != self.settings.level:
                live.level = self.settings.level
                _instrumentors.apply_level(self.settings.level, self.tracer_provider)

    # -- what was lost -------------------------------------------------------------------

    def lost(self) -> dict[str, int]:
        """Spans this process recorded but will never deliver, by reason (``queue_full``,
        ``exit_flush``, ``export_failed``...); empty when nothing was lost. The same
        counts go into the trace DB (docs/tracedb.md, "Incomplete recordings")."""
        return losses.lost_by_reason()

    # -- ending -------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Store everything recorded before the call, and make the trace DB's spans
        stored for later into rows (docs/tracedb.md, "Bursts"): queryable on return.
        False when that did not finish within ``timeout_millis``."""
        deadline = time.monotonic() + timeout_millis / 1000
        ok = True
        for processor in list(self.processors):
            with handle_internal_errors():
                ok = processor.force_flush(timeout_millis) and ok
                left = int(max(0.0, deadline - time.monotonic()) * 1000)
                ok = processor.settle(left) and ok
        return ok

    def _shutdown_processors(self) -> None:
        for processor in self.processors:
            with handle_internal_errors():
                processor.shutdown()

    def shutdown(self) -> None:
        """Uninstrument, flush and close everything this scope installed (at most
        SHUTDOWN_SECONDS: what is not exported by then is dropped)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with handle_internal_errors():
            _instrumentors.uninstrument_all()
        self._remove_sigterm_flush()
        if handoff.is_top_process():
            _collect_cheap_children()
        _wait_for_recoveries()
        if flight.is_on():
            # Recorded spans still buffered may have failed: triggers, while it is on.
            for processor in self.processors:
                deliver = getattr(processor, "deliver_pending", None)
                if deliver is not None:
                    with handle_internal_errors():
                        deliver()
        if handoff.is_top_process():
            # Recordings staged by processes that died before storing their spans, and
            # that no parent finished (this run's or an earlier one's): made into spans
            # before the instrumentors' record kinds could be needed elsewhere.
            with handle_internal_errors():
                _flight_stage.store_orphans()
            # Loss totals that processes could not store themselves (losses.spool).
            with handle_internal_errors():
                exporter = _flight_mirror.staging_exporter()
                if exporter is not None:
                    exporter.store_spooled_losses()
        flight.stop()
        _flight_signal.uninstall()
        run_within(
            SHUTDOWN_SECONDS,
            self._shutdown_processors,
            "procscope-shutdown",
            lambda: queued_spans(self.processors),
            SHUTDOWN_MAX_SECONDS,
        )
        with handle_internal_errors():
            handoff.remove_if_empty()
        live = shared_state.settings()
        live.configured = False
        shared_state.get().scope_settings = None
