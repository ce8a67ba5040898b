"""procscope.setup(), configure() and shutdown() in real programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_bad_setting_in_a_real_program_warns_and_the_program_runs(
    run_app: Any, spans_in: Any
) -> None:
    """setup(level="verbose") warns once on stderr and the program carries on."""
    result = run_app(
        """
        import procscope
        scope = procscope.setup(level="verbose", exporter="none")
        print("level is", scope.settings.level)
        print("still running")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "level is full" in result.stdout and "still running" in result.stdout
    warning_lines = [line for line in result.stderr.splitlines() if "bad value" in line]
    assert len(warning_lines) == 1
    assert "level" in warning_lines[0] and "'verbose'" in warning_lines[0]


def test_bad_environment_setting_in_a_real_program(run_app: Any, spans_in: Any) -> None:
    """PROCSCOPE_SAMPLE_RATE=lots warns once naming the variable; the default is used."""
    result = run_app(
        """
        import procscope
        print("rate", procscope.setup(exporter="none").settings.sample_rate)
        """,
        env={"PROCSCOPE_SAMPLE_RATE": "lots"},
    )
    assert result.returncode == 0, result.stderr
    assert "rate 1.0" in result.stdout
    assert result.stderr.count("PROCSCOPE_SAMPLE_RATE") == 1


def test_setup_twice_warns_and_keeps_the_first(run_app: Any, spans_in: Any) -> None:
    """A second setup() warns and returns the first scope with its settings."""
    result = run_app(
        """
        import warnings
        import procscope
        first = procscope.setup(level="minimal", exporter="none")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            second = procscope.setup(level="full", exporter="console")
        print("same", second is first, second.settings.level, len(caught))
        print("message", caught[0].message)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "same True minimal 1" in result.stdout
    assert "already called" in result.stdout


def test_spans_reach_the_exporter_with_a_proper_resource(run_app: Any, spans_in: Any) -> None:
    """Spans made after setup() are exported, with service.name and process attributes."""
    result = run_app(
        """
        import os
        import procscope
        from opentelemetry import trace
        procscope.setup(exporter="console")
        tracer = trace.get_tracer("app")
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner"):
                pass
        print("pid", os.getpid())
        """
    )
    assert result.returncode == 0, result.stderr
    spans = {span["name"]: span for span in spans_in(result.stdout)}
    assert set(spans) >= {"outer", "inner"}
    assert spans["inner"]["parent_id"] == spans["outer"]["context"]["span_id"]
    assert spans["inner"]["context"]["trace_id"] == spans["outer"]["context"]["trace_id"]
    resource = spans["outer"]["resource"]["attributes"]
    assert resource["service.name"] == "app"
    pid = int(result.stdout.split("pid ")[1].split()[0])
    assert resource["process.pid"] == pid
    assert "telemetry.sdk.language" in resource


def test_service_name_from_the_environment_wins(run_app: Any, spans_in: Any) -> None:
    """OTEL_SERVICE_NAME keeps its usual meaning."""
    result = run_app(
        """
        import procscope
        from opentelemetry import trace
        procscope.setup(exporter="console")
        with trace.get_tracer("app").start_as_current_span("work"):
            pass
        """,
        env={"OTEL_SERVICE_NAME": "billing"},
    )
    spans = spans_in(result.stdout)
    assert spans and spans[0]["resource"]["attributes"]["service.name"] == "billing"


def test_existing_provider_is_kept_and_gets_our_processors(run_app: Any, spans_in: Any) -> None:
    """A program's own TracerProvider is not replaced; our exporters are added to it."""
    result = run_app(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "mine"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(provider)

        import procscope
        scope = procscope.setup(exporter="console")
        print("same provider", trace.get_tracer_provider() is provider)
        with trace.get_tracer("app").start_as_current_span("work"):
            pass
        print("memory got", [s.name for s in memory.get_finished_spans()])
        """
    )
    assert result.returncode == 0, result.stderr
    assert "same provider True" in result.stdout
    assert "memory got ['work']" in result.stdout
    spans = spans_in(result.stdout)
    assert [s["name"] for s in spans] == ["work", "end app.py"]  # and how the program ended
    assert spans[0]["resource"]["attributes"]["service.name"] == "mine"
    assert result.stderr.count("installed its own TracerProvider") == 1


def test_configure_changes_sampling_and_level_while_running(run_app: Any, spans_in: Any) -> None:
    """configure() applies to new spans at once: rate 0 drops them, levels switch plugins."""
    result = run_app(
        """
        import procscope
        from opentelemetry import trace
        from procscope.instrumentation.messaging import MessagingInstrumentor
        from procscope.instrumentation.lifecycle import LifecycleInstrumentor
        procscope.setup(exporter="console", level="full")
        tracer = trace.get_tracer("app")
        with tracer.start_as_current_span("kept-before"):
            pass
        procscope.configure(sample_rate=0.0)
        with tracer.start_as_current_span("dropped"):
            pass
        procscope.configure(sample_rate=1.0)
        with tracer.start_as_current_span("kept-after"):
            pass
        print("messaging on", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        procscope.configure(level="minimal")
        print("messaging on", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        print("lifecycle on", LifecycleInstrumentor().is_instrumented_by_opentelemetry)
        procscope.configure(level="off")
        print("lifecycle on", LifecycleInstrumentor().is_instrumented_by_opentelemetry)
        procscope.configure(level="messages_only")
        print("messaging on", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        """
    )
    assert result.returncode == 0, result.stderr
    names = [span["name"] for span in spans_in(result.stdout)]
    assert "kept-before" in names and "kept-after" in names and "dropped" not in names
    lines = [line for line in result.stdout.splitlines() if line.endswith(("True", "False"))]
    assert lines == [
        "messaging on True",
        "messaging on False",
        "lifecycle on True",
        "lifecycle on False",
        "messaging on True",
    ]


def test_disabled_instrumentation_is_honoured_by_setup(run_app: Any, spans_in: Any) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns one of ours off in setup() too."""
    result = run_app(
        """
        import procscope
        from procscope.instrumentation.messaging import MessagingInstrumentor
        from procscope.instrumentation.state import StateInstrumentor
        procscope.setup(exporter="none")
        print("messaging", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        print("state", StateInstrumentor().is_instrumented_by_opentelemetry)
        """,
        env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "procscope_messaging"},
    )
    assert result.returncode == 0, result.stderr
    assert "messaging False" in result.stdout and "state True" in result.stdout


def test_shutdown_flushes_and_uninstruments(run_app: Any, spans_in: Any) -> None:
    """shutdown() exports what is pending and switches every instrumentor off."""
    result = run_app(
        """
        import os
        import procscope
        from opentelemetry import trace
        from procscope.instrumentation.messaging import MessagingInstrumentor
        procscope.setup(exporter="console")
        with trace.get_tracer("app").start_as_current_span("before-shutdown"):
            pass
        procscope.shutdown()
        print("messaging", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        os._exit(0)  # skips atexit: only shutdown() can have flushed
        """
    )
    assert result.returncode == 0, result.stderr
    assert [s["name"] for s in spans_in(result.stdout)] == ["before-shutdown"]
    assert "messaging False" in result.stdout


def test_spawned_children_report_the_same_service(run_app: Any, spans_in: Any) -> None:
    """A spawn child and a Python subprocess report the parent program's service.name."""
    result = run_app(
        """
        import multiprocessing as mp, subprocess, sys
        from opentelemetry import trace
        import procscope

        def child():
            with trace.get_tracer("app").start_as_current_span("in-spawn-child"):
                pass

        if __name__ == "__main__":
            procscope.setup(exporter="console", level="minimal")
            process = mp.get_context("spawn").Process(target=child)
            process.start()
            process.join()
            code = ("from opentelemetry import trace\\n"
                    "with trace.get_tracer('app').start_as_current_span('in-subprocess'):"
                    " pass")
            subprocess.run([sys.executable, "-c", code], check=True)
        """
    )
    assert result.returncode == 0, result.stderr
    services = {
        span["name"]: span["resource"]["attributes"]["service.name"]
        for span in spans_in(result.stdout)
    }
    assert services.get("in-spawn-child") == "app", services
    assert services.get("in-subprocess") == "app", services


def test_programmatic_settings_reach_python_subprocesses(run_app: Any) -> None:
    """Settings given to setup() as keywords are the ones a Python subprocess starts with."""
    result = run_app(
        """
        import os, subprocess, sys
        import procscope
        procscope.setup(exporter="none", level="minimal", sample_rate=0.25, sampling="tail",
                        db_max_bytes=5_000_000, db_max_age=3600)
        print(subprocess.run(
            [sys.executable, "-c",
             "import os; print(*[os.environ[k] for k in ('PROCSCOPE_LEVEL', "
             "'PROCSCOPE_SAMPLE_RATE', 'PROCSCOPE_SAMPLING', 'PROCSCOPE_DB_MAX_BYTES', "
             "'PROCSCOPE_DB_MAX_AGE', 'OTEL_TRACES_EXPORTER')])"],
            capture_output=True, text=True, check=True).stdout.strip())
        procscope.configure(level="full")
        print(subprocess.run([sys.executable, "-c",
                              "import os; print(os.environ['PROCSCOPE_LEVEL'])"],
                             capture_output=True, text=True, check=True).stdout.strip())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["minimal 0.25 tail 5000000 3600.0 none", "full"]


def test_retention_settings_reach_the_trace_db_exporter(run_app: Any, tmp_path: Path) -> None:
    """db_max_bytes and db_max_age given to setup() configure the trace DB exporter."""
    result = run_app(
        """
        import procscope
        scope = procscope.setup(db="r.db", db_max_bytes=2_000_000, db_max_age=60)
        exporter = scope.processors[0].downstream[0]._batch_processor._exporter
        print(type(exporter).__name__, exporter.max_bytes, exporter.max_age)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "TraceDBSpanExporter 2000000 60.0"


def test_trace_db_batches_are_larger_than_the_sdk_default_unless_configured(
    run_app: Any,
) -> None:
    """The trace DB's batch processor exports 4,096 spans at a time (one transaction
    each); other exporters keep the SDK's 512, and OTEL_BSP_* sizes still rule."""
    code = """
        import procscope
        scope = procscope.setup(exporter="tracedb,console")
        for processor in scope.processors[0].downstream:
            batch = processor._batch_processor
            print(type(batch._exporter).__name__, batch._max_export_batch_size)
        """
    out = run_app(code).stdout
    assert "TraceDBSpanExporter 4096" in out and "ConsoleSpanExporter 512" in out
    env = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}
    assert "TraceDBSpanExporter 100" in run_app(code, env=env).stdout
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": "1000"}
    assert "TraceDBSpanExporter 512" in run_app(code, env=env).stdout


def test_batch_queue_is_larger_than_the_sdk_default_unless_configured(run_app: Any) -> None:
    """procscope's batch processors buffer 8,192 spans; OTEL_BSP_MAX_QUEUE_SIZE still rules."""
    code = """
        import procscope
        scope = procscope.setup(exporter="console")
        print("queue", scope.processors[0].downstream[0]._batch_processor._max_queue_size)
        """
    assert "queue 8192" in run_app(code).stdout
    assert "queue 1000" in run_app(code, env={"OTEL_BSP_MAX_QUEUE_SIZE": "1000"}).stdout
    # A queue smaller than the export batch (512) is refused by the SDK: one warning
    # naming the setting, the defaults, and the program runs on.
    refused = run_app(code, env={"OTEL_BSP_MAX_QUEUE_SIZE": "100"})
    assert refused.returncode == 0, refused.stderr
    assert "queue 8192" in refused.stdout
    assert refused.stderr.count("OTEL_BSP_MAX_QUEUE_SIZE") == 1


def test_setup_imports_no_instrumentor_base_and_the_classes_still_switch(run_app: Any) -> None:
    """setup() switches procscope's plugins without importing OpenTelemetry's
    BaseInstrumentor (tens of milliseconds in every process); the public instrumentor
    classes, imported later, see what setup() switched on and can switch it off."""
    result = run_app(
        """
        import queue, sys
        import procscope
        procscope.setup(exporter="none")
        print("base", "opentelemetry.instrumentation.instrumentor" in sys.modules)
        print("patched", hasattr(queue.Queue.put, "__wrapped__"))
        from procscope.instrumentation.messaging import MessagingInstrumentor
        print("on", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        MessagingInstrumentor().uninstrument()
        print("on", MessagingInstrumentor().is_instrumented_by_opentelemetry)
        print("patched", hasattr(queue.Queue.put, "__wrapped__"))
        MessagingInstrumentor().instrument()
        print("patched", hasattr(queue.Queue.put, "__wrapped__"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "base False",
        "patched True",
        "on True",
        "on False",
        "patched False",
        "patched True",
    ]
