"""Building the tracing pipeline that ``procscope.setup()`` installs.

Resource, sampler, exporters and their span processors. Everything here runs once at
setup; nothing here is on a hot path.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import (
    OsResourceDetector,
    ProcessResourceDetector,
    Resource,
    get_aggregated_resources,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from procscope.core import handoff
from procscope.core.guard import warn_once
from procscope.core.settings import Settings, warn_bad

from ._batch import make_batch_span_processor

_logger = logging.getLogger("procscope")

OTLP_PROTOCOLS = ("grpc", "http/protobuf")


def program_name() -> str:
    """A readable default service name: the script or module the program runs."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-m"):
        return "python"
    base = os.path.basename(argv0)
    if base == "__main__.py":
        base = os.path.basename(os.path.dirname(argv0)) or base
    return base[:-3] if base.endswith(".py") else base


def build_resource(run_attributes: Mapping[str, str] | None = None) -> Resource:
    """The SDK's own resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, detectors),
    with process and OS attributes, the program's name as a default service name, and
    the run's id (``procscope.core.runs``).

    What ``get_aggregated_resources([process, os]).merge(Resource.create())`` gives,
    but with the SDK's own detectors run here, in order, rather than on a thread pool
    for each call (three pools, six threads: 3 to 6 ms of every process's set-up, and
    the import of ``concurrent.futures.thread``). They read this process and the
    environment, and cannot block. Any other detector (``OTEL_EXPERIMENTAL_RESOURCE
    _DETECTORS``), which may, is run the SDK's way, with its timeout."""
    env_names_service = bool(os.environ.get("OTEL_SERVICE_NAME", "").strip()) or (
        "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    )
    if not env_names_service:
        # Through the environment rather than as a resource attribute, so that spawn and
        # forkserver children and Python subprocesses, whose own argv says "-c", report
        # the same service: one program, one service in Jaeger or Tempo.
        os.environ["OTEL_SERVICE_NAME"] = program_name()
    created = _created_resource()
    detected = _aggregated([ProcessResourceDetector(), OsResourceDetector()], created)
    return detected.merge(created).merge(Resource(dict(run_attributes or {})))


def _inline_detector_types() -> tuple[type, ...]:
    """The SDK's detectors that only read this process and its environment."""
    from opentelemetry.sdk import resources

    names = ("ProcessResourceDetector", "OsResourceDetector", "OTELResourceDetector",
             "ServiceInstanceIdResourceDetector")  # fmt: skip
    return tuple(getattr(resources, name) for name in names if hasattr(resources, name))


def _aggregated(detectors: list[Any], initial: Resource) -> Resource:
    """``get_aggregated_resources(detectors, initial)``, run here when every detector is
    one of the SDK's that cannot block (same order, same handling of a failure)."""
    inline = _inline_detector_types()
    if any(type(detector) not in inline for detector in detectors):
        return get_aggregated_resources(detectors, initial)
    return _detected_in_order(detectors, initial)


def _detected_in_order(detectors: list[Any], initial: Resource) -> Resource:
    """``initial`` merged with what each detector finds, on this thread, in order, as
    ``get_aggregated_resources`` merges them (a failing detector: raised or skipped)."""
    merged = initial
    for detector in detectors:
        try:
            detected = detector.detect()
        except Exception as exc:
            if detector.raise_on_error:
                raise
            _logger.warning("Exception %s in detector %s, ignoring", exc, detector)
            detected = Resource.get_empty()
        merged = merged.merge(detected)
    return merged


def _created_resource() -> Resource:
    """``Resource.create()``, its detectors run by :func:`_aggregated`; the SDK's own
    call where its internals are not the ones this mirrors."""
    from opentelemetry.sdk import resources

    default = getattr(resources, "_DEFAULT_RESOURCE", None)
    build = getattr(resources, "_build_resource_detectors", None)
    if not isinstance(default, Resource) or build is None:
        return Resource.create()
    resource = _aggregated(build(), default)
    if not resource.attributes.get(resources.SERVICE_NAME, None):
        name = "unknown_service"
        if sys.executable:
            name += f":{os.path.basename(sys.executable)}"
        resource = resource.merge(Resource({resources.SERVICE_NAME: name}))
    return resource


_LOCK_TYPE = type(threading.Lock())


class ProcscopeTracerProvider(TracerProvider):
    """The SDK's TracerProvider, whose fork child renews its process-dependent resource
    attributes without a thread pool.

    In a fork child the SDK (1.40 and later) runs its process-dependent resource
    detectors again (``_handle_fork``), through ``get_aggregated_resources``: a
    ThreadPoolExecutor, a thread started and joined, 1 to 2 ms of every forked child's
    start (and ``multiprocessing``'s fork is the default start method up to Python
    3.13). With the SDK's default detectors the only one is the one that draws a new
    ``service.instance.id``, which does no I/O and cannot block: it runs here, on the
    forking thread, and its result is merged as the SDK merges it. With any other
    process-dependent detector (``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS``), which may
    take time, the SDK's own way.

    Even made inline, the child's resource cost its start about 0.6 ms: making and
    merging it touched some 200 pages of memory shared with the parent, each then
    copied. So it is made at its first use (:class:`_ForkChildResource`), by the
    first span or record the child exports; a child that exports nothing never makes
    it."""

    def _handle_fork(self) -> None:
        # In the child, at the fork (one thread): the SDK's service.instance.id detector
        # may have been detecting on a thread of the parent, whose lock nobody here will
        # release; detecting would hang the child for good. A new lock (the SDK renews
        # none at a fork).
        from opentelemetry.sdk import resources

        if isinstance(getattr(resources, "_service_instance_id_lock", None), _LOCK_TYPE):
            resources._service_instance_id_lock = threading.Lock()  # type: ignore[attr-defined]
        base = self._resource  # type: ignore[has-type]
        if isinstance(base, _ForkChildResource) or "_attributes" in vars(base):
            self._tracers_lock = threading.Lock()
            # (what _update_resource does, the merge left to the resource's first use)
            lazy = _ForkChildResource(base)
            self._resource = lazy
            for tracer in self._tracers.values():
                tracer._set_resource(lazy)
            return
        try:
            resource = _inline_process_resource()
        except Exception:  # noqa: BLE001 -- another SDK than expected: the SDK's way
            resource = None
        if resource is None:
            super()._handle_fork()  # type: ignore[misc]
            return
        self._tracers_lock = threading.Lock()
        self._update_resource(resource)  # type: ignore[attr-defined]


class _ForkChildResource(Resource):
    """A fork child's resource: its parent's merged with the child's process-dependent
    attributes (a ``service.instance.id`` of its own), as the SDK's provider merges them
    at a fork, but made when first read. ``Resource.__init__`` is not called: its two
    fields are filled at the first look-up of either (``__getattr__`` runs only for
    fields not set). Two threads reading it first at once each make it, equal: the SDK
    keeps one ``service.instance.id`` per process. No lock: a fork child of this child
    would inherit it held."""

    def __init__(self, base: Resource) -> None:  # pylint: disable=super-init-not-called
        self._base = base

    def __getattr__(self, name: str) -> Any:
        if name not in ("_attributes", "_schema_url"):
            raise AttributeError(name)
        base = self.__dict__["_base"]
        try:
            detected = _inline_process_resource()
            if detected is None:
                from opentelemetry.sdk import resources

                detected = resources._get_process_dependent_resource()  # type: ignore[attr-defined]
            made = base.merge(detected)
        except Exception:  # noqa: BLE001 -- the parent's resource rather than a failure
            from procscope.core.guard import log_internal_error

            log_internal_error()
            made = base
        self.__dict__["_schema_url"] = made._schema_url
        self.__dict__["_attributes"] = made._attributes
        return self.__dict__[name]

    def __reduce__(self) -> Any:
        return Resource, (dict(self.attributes), self.schema_url)


def _inline_process_resource() -> Resource | None:
    """What the SDK's ``_get_process_dependent_resource`` gives, detected on this thread,
    when every process-dependent detector is one that cannot block; else None."""
    from opentelemetry.sdk import resources

    detectors = [
        detector
        for detector in resources._build_resource_detectors()  # type: ignore[attr-defined]
        if detector.is_process_dependent()
    ]
    inline = getattr(resources, "ServiceInstanceIdResourceDetector", None)
    if inline is None or any(type(detector) is not inline for detector in detectors):
        return None
    return _detected_in_order(detectors, Resource.get_empty())


def otlp_protocol() -> str:
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    protocol = raw.strip().lower() or "grpc"
    if protocol not in OTLP_PROTOCOLS:
        name = (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
            if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            else "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        warn_bad(name, raw, "expected grpc or http/protobuf", "grpc")
        protocol = "grpc"
    return protocol


def build_exporter(name: str, settings: Settings) -> SpanExporter | None:
    """One exporter by its OTEL_TRACES_EXPORTER name; None (with a warning) if it fails."""
    try:
        if name == "tracedb":
            from procscope.exporters.tracedb import TraceDBSpanExporter

            return TraceDBSpanExporter(
                path=settings.db, max_bytes=settings.db_max_bytes, max_age=settings.db_max_age
            )
        if name == "otlp":
            from ._otlp import make_otlp_exporter

            return make_otlp_exporter(otlp_protocol())
        if name == "console":
            return ConsoleSpanExporter()
        from importlib.metadata import entry_points

        for ep in entry_points(group="opentelemetry_traces_exporter"):
            if ep.name == name:
                return ep.load()()  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 -- a broken exporter must not stop the program
        warn_once(
            f"exporter-failed:{name}",
            "procscope: exporter %r could not be created (%s: %s); spans will not go there",
            name,
            type(exc).__name__,
            exc,
        )
    return None


# The SDK's default queue (2,048 spans) overflows, dropping spans, when a busy program
# records every message: procscope buffers more unless OTEL_BSP_MAX_QUEUE_SIZE says
# otherwise. At about 2.6 kB a finished span, a full queue holds about 20 MB.
DEFAULT_QUEUE_SIZE = 8192


def _queue_size() -> int | None:
    """Our default queue size, or None to let the SDK read OTEL_BSP_MAX_QUEUE_SIZE."""
    return None if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") else DEFAULT_QUEUE_SIZE


def _export_batch_size(exporter: SpanExporter) -> int | None:
    """The exporter's own batch size (the trace DB's: 4,096 spans, one transaction each,
    where the SDK's 512 spent a third of the time committing), or None to let the SDK
    read OTEL_BSP_MAX_EXPORT_BATCH_SIZE. Either OTEL_BSP_* size, when set, rules."""
    size = getattr(exporter, "preferred_batch_size", None)
    if not isinstance(size, int) or size <= 0:
        return None
    if os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or os.environ.get(
        "OTEL_BSP_MAX_QUEUE_SIZE"
    ):
        return None
    return min(size, DEFAULT_QUEUE_SIZE)


def _batch_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    """A batch processor; OTEL_BSP_* settings the SDK refuses warn and fall back."""
    try:
        return make_batch_span_processor(
            exporter,
            max_queue_size=_queue_size(),
            max_export_batch_size=_export_batch_size(exporter),
        )
    except ValueError as exc:
        given = " ".join(
            f"{name}={os.environ[name]}"
            for name in sorted(os.environ)
            if name.startswith("OTEL_BSP_")
        )
        warn_bad("OTEL_BSP_* (batch span processor)", given, str(exc), "the defaults")
        return make_batch_span_processor(
            exporter,
            max_queue_size=DEFAULT_QUEUE_SIZE,
            schedule_delay_millis=5000,
            max_export_batch_size=512,
            export_timeout_millis=30000,
        )


def record_sink(settings: Settings, processors: list[SpanProcessor]) -> Any:
    """The trace DB's record sink (``TraceDBSpanExporter.write_records``) when the trace
    DB behind one batch processor is all the recorder delivers to (head sampling, no
    other exporter): then records go from the recorder's drain straight into the DB as
    plain spans, without ReadableSpans or the batch processor's queue. Else None."""
    if settings.sampling == "tail" or list(settings.exporters) != ["tracedb"]:
        return None
    if len(processors) != 1:
        return None
    processor: Any = processors[0]
    exporter = getattr(processor, "span_exporter", None) or getattr(
        getattr(processor, "_batch_processor", None), "_exporter", None
    )
    return getattr(exporter, "write_records", None)


def build_processors(settings: Settings) -> list[SpanProcessor]:
    """A batch span processor per configured exporter; in tail mode, behind one tail sampler.

    Head mode (the default): ``sample_rate`` is applied at the start of each trace by the
    instrumentors' gate and the sampler, and nothing more is needed here. Tail mode: the
    head records every trace, and a :class:`TailSamplingProcessor` in front of the batch
    processors keeps errors, abnormal process ends, slow traces, and ``sample_rate`` of
    the rest (read live, so ``procscope.configure(sample_rate=...)`` applies at once).
    See docs/sampling.md.
    """
    from procscope.core.head_sampling import set_records_every_trace

    # The spool where exiting children hand off what their exit flush could not export
    # (procscope.core.handoff): named here in the top process, inherited by children.
    handoff.prepare(settings.db if "tracedb" in settings.exporters else None)
    processors: list[SpanProcessor] = []
    for name in settings.exporters:
        exporter = build_exporter(name, settings)
        if exporter is not None:
            processors.append(_batch_processor(exporter))
    tail = settings.sampling == "tail" and bool(processors)
    set_records_every_trace(tail)
    if not tail:
        return processors
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    from procscope.processors.sampling import TailSamplingProcessor

    if len(processors) == 1:
        downstream: SpanProcessor = processors[0]
    else:
        fan_out = SynchronousMultiSpanProcessor()
        for processor in processors:
            fan_out.add_span_processor(processor)
        downstream = fan_out
    sampler = TailSamplingProcessor(downstream)
    # Its thread starts here, at setup, like the batch processors' and the relay's: started
    # with the first buffered span, it was a thread the program's own code seemed to leak.
    sampler.start_worker()
    return [sampler]
