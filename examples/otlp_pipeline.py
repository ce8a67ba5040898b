"""A small pipeline to look at in Jaeger, Tempo or any OTLP backend.

The main process opens a span ``pipeline``; a producer thread (span ``produce``) puts three
jobs on a multiprocessing queue, each from inside a span ``publish``; a consumer process
(spawned, span ``consume``) takes them off and handles each in a span ``handle``, which is
linked to the ``publish`` span of its job. Run it under procscope with OTLP export:

    procscope run --exporter otlp -- python examples/otlp_pipeline.py

These few spans are made with the plain OpenTelemetry API: they go wherever procscope's own
spans go, through the tracer provider procscope set up, and they show how spans of your own
sit in the same trees as procscope's (there, each ``handle`` also sits below procscope's
span for the get that returned its job, in the job's trace). Into the thread and the
consumer process the context is carried by hand only where nothing carried it already
(procscope's lifecycle instrumentor does); the context sent with each job is what the
``handle`` span's link points at.

It prints the trace id, to look the trace up in the backend (all zeros when run without
procscope or another OpenTelemetry SDK set up: the API alone records nothing).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link

TRACER_NAME = "procscope.examples.otlp_pipeline"
JOBS = 3


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def produce(jobs: Any, parent: Context) -> None:
    """The producer thread: one ``publish`` span per job, its context sent with the job."""
    # A new thread starts with an empty context; under procscope's lifecycle instrumentor
    # it runs in its starter's context (or in its own `thread` span, with
    # PROCSCOPE_LIFECYCLE_SPANS=all), which is then the parent.
    inherited = trace.get_current_span().get_span_context().is_valid
    with tracer().start_as_current_span("produce", context=None if inherited else parent):
        for number in range(JOBS):
            with tracer().start_as_current_span("publish", attributes={"job.number": number}):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                jobs.put({"number": number, "payload": "x" * (number + 1), "context": carrier})
        jobs.put(None)  # no more jobs


def consume(jobs: Any, results: Any, parent_carrier: dict[str, str]) -> None:
    """The consumer process: a ``consume`` span, and a ``handle`` span per job."""
    current = trace.get_current_span().get_span_context()
    # Under procscope's lifecycle instrumentor this process already runs inside the
    # spawner's trace; otherwise the context comes from the carrier given at start.
    parent = None if current.is_valid else propagate.extract(parent_carrier)
    with tracer().start_as_current_span("consume", context=parent):
        while True:
            job = jobs.get(timeout=60)
            if job is None:
                break
            published = trace.get_current_span(propagate.extract(job["context"])).get_span_context()
            links = [Link(published)] if published.is_valid else []
            with tracer().start_as_current_span(
                "handle", links=links, attributes={"job.number": job["number"]}
            ):
                results.put((job["number"], len(job["payload"])))
        results.put(None)


def main() -> None:
    ctx = mp.get_context("spawn")
    jobs = ctx.Queue()
    results = ctx.Queue()
    with tracer().start_as_current_span("pipeline") as root:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        consumer = ctx.Process(target=consume, args=(jobs, results, carrier), name="consumer")
        consumer.start()
        producer = threading.Thread(
            target=produce, args=(jobs, context.get_current()), name="producer"
        )
        producer.start()
        handled = []
        while (item := results.get(timeout=60)) is not None:
            handled.append(item)
        producer.join(timeout=60)
        consumer.join(timeout=60)
        trace_id = root.get_span_context().trace_id
    print(f"handled {len(handled)} jobs: {sorted(handled)}")
    print(f"consumer exit code: {consumer.exitcode}")
    print(f"trace id: {trace_id:032x}")


if __name__ == "__main__":
    main()
