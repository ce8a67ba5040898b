"""Every distribution builds as a wheel and works installed from wheels, with no editable
paths: the whole suite together, and each plugin alone beside the OpenTelemetry packages."""

from __future__ import annotations

import email
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = {
    "procscope-instrumentation-lifecycle": (
        "instrumentation/procscope-instrumentation-lifecycle",
        "procscope.instrumentation.lifecycle",
    ),
    "procscope-instrumentation-messaging": (
        "instrumentation/procscope-instrumentation-messaging",
        "procscope.instrumentation.messaging",
    ),
    "procscope-instrumentation-state": (
        "instrumentation/procscope-instrumentation-state",
        "procscope.instrumentation.state",
    ),
    "procscope-processor-sampling": (
        "processors/procscope-processor-sampling",
        "procscope.processors.sampling",
    ),
    "procscope-exporter-tracedb": (
        "exporters/procscope-exporter-tracedb",
        "procscope.exporters.tracedb",
    ),
}

CORE = ("procscope-core", "core/procscope-core")

pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One wheel per distribution, built from this checkout."""
    out = tmp_path_factory.mktemp("wheels")
    for source in [ROOT / CORE[1], *(ROOT / d for d, _ in PLUGINS.values()), ROOT]:
        _run(
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(source),
        )
    built = {}
    for wheel in out.glob("*.whl"):
        dist = wheel.name.split("-")[0].replace("_", "-")
        built[dist] = wheel
    assert set(built) == {*PLUGINS, CORE[0], "procscope"}
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(name))


def _venv(path: Path) -> Path:
    _run(sys.executable, "-m", "venv", str(path))
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def otel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment holding only the OpenTelemetry packages."""
    python = _venv(tmp_path_factory.mktemp("alone") / "venv")
    _run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation",
    )
    yield python


def test_plugin_wheels_depend_only_on_opentelemetry_and_core(wheels: dict[str, Path]) -> None:
    """Each plugin's declared requirements are OpenTelemetry packages and procscope-core,
    nothing else of ours; procscope-core needs only the OpenTelemetry API."""
    for dist in PLUGINS:
        requires = _metadata(wheels[dist]).get_all("Requires-Dist") or []
        names = [
            r.split(";")[0]
            .split("[")[0]
            .split("<")[0]
            .split(">")[0]
            .split("=")[0]
            .split("~")[0]
            .strip()
            for r in requires
            if "extra ==" not in r
        ]
        assert CORE[0] in names, (dist, names)
        others = [n for n in names if n != CORE[0]]
        assert others and all(n.startswith("opentelemetry-") for n in others), (dist, names)
    core_requires = _metadata(wheels[CORE[0]]).get_all("Requires-Dist") or []
    assert [r.split(">")[0] for r in core_requires] == ["opentelemetry-api"]


def test_shared_helpers_are_in_core_only(wheels: dict[str, Path]) -> None:
    """The shared helpers are packed once, in procscope-core; no plugin carries a copy,
    and none claims the ``procscope`` namespace, which belongs to the root."""
    with zipfile.ZipFile(wheels[CORE[0]]) as archive:
        core_names = set(archive.namelist())
    assert "procscope/core/guard.py" in core_names
    assert "procscope/__init__.py" not in core_names
    for dist in PLUGINS:
        with zipfile.ZipFile(wheels[dist]) as archive:
            names = set(archive.namelist())
        assert not [n for n in names if n.endswith("/guard.py")], dist
        assert "procscope/__init__.py" not in names


def test_each_plugin_installs_and_imports_alone(wheels: dict[str, Path], otel_venv: Path) -> None:
    """Installed alone beside OpenTelemetry, each plugin imports and exposes its names."""
    for dist, (_, module) in PLUGINS.items():
        _run(
            str(otel_venv),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheels[dist].parent),
            str(wheels[dist]),
        )
        listed = _run(str(otel_venv), "-m", "pip", "list", "--format=freeze")
        ours = sorted(
            line.split("==")[0]
            for line in listed.splitlines()
            if line.lower().startswith("procscope")
        )
        assert ours == sorted([dist, CORE[0]])
        code = textwrap.dedent(
            f"""
            import importlib
            module = importlib.import_module({module!r})
            for name in module.__all__:
                getattr(module, name)
            print("ok", sorted(module.__all__))
            """
        )
        assert _run(str(otel_venv), "-c", code).startswith("ok")
        _run(str(otel_venv), "-m", "pip", "uninstall", "--quiet", "--yes", dist, CORE[0])


LIFECYCLE_ALONE = """
import multiprocessing

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from procscope.instrumentation.lifecycle import LifecycleInstrumentor


def work():
    print("child instrumented", LifecycleInstrumentor().is_instrumented_by_opentelemetry)


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    LifecycleInstrumentor().instrument()
    for method in ("spawn", "forkserver"):
        process = multiprocessing.get_context(method).Process(target=work)
        process.start()
        process.join()
        print(method, process.exitcode)
"""


def test_lifecycle_plugin_alone_sets_up_its_children(
    wheels: dict[str, Path], otel_venv: Path, tmp_path: Path
) -> None:
    """Installed alone (no procscope distribution to set a child up), the lifecycle
    plugin still instruments its spawn and forkserver children."""
    dist = "procscope-instrumentation-lifecycle"
    _run(
        str(otel_venv),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        str(wheels[dist].parent),
        str(wheels[dist]),
    )
    try:
        (tmp_path / "app.py").write_text(LIFECYCLE_ALONE)
        out = _run(str(otel_venv), "app.py", cwd=tmp_path)
    finally:
        _run(str(otel_venv), "-m", "pip", "uninstall", "--quiet", "--yes", dist, CORE[0])
    lines = [line for line in out.splitlines() if not line.startswith((" ", "{", "}"))]
    assert lines == [
        "child instrumented True",
        "spawn 0",
        "child instrumented True",
        "forkserver 0",
    ]


def test_whole_suite_from_wheels(wheels: dict[str, Path], tmp_path: Path) -> None:
    """pip install procscope from wheels: every public name imports, the CLI and the
    auto-launch work, with no editable path anywhere."""
    python = _venv(tmp_path / "venv")
    _run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--find-links",
        str(wheels["procscope"].parent),
        str(wheels["procscope"]),
    )
    assert _run(str(python), "-m", "pip", "list", "--editable", "--format=freeze").strip() == ""
    code = textwrap.dedent(
        f"""
        import importlib, procscope
        assert procscope.__file__.startswith({str(tmp_path / "venv")!r}), procscope.__file__
        for name in procscope.__all__:
            getattr(procscope, name)
        for module in {[m for _, m in PLUGINS.values()]!r}:
            mod = importlib.import_module(module)
            assert mod.__file__.startswith({str(tmp_path / "venv")!r}), mod.__file__
            for name in mod.__all__:
                getattr(mod, name)
        from procscope.instrumentation.messaging import MessagingInstrumentor
        print("ok")
        """
    )
    assert _run(str(python), "-c", code).strip() == "ok"
    bin_dir = python.parent
    assert _run(str(bin_dir / "procscope"), "--version").startswith("procscope ")
    app = tmp_path / "app.py"
    app.write_text(
        "from opentelemetry import trace\n"
        "with trace.get_tracer('app').start_as_current_span('from-wheels'):\n"
        "    pass\n"
    )
    _run(str(bin_dir / "opentelemetry-instrument"), str(python), str(app), cwd=tmp_path)
    listing = _run(
        str(bin_dir / "procscope"), "traces", "--db", str(tmp_path / "procscope.db"), "--json"
    )
    assert "from-wheels" in listing
    # procscope demo from the wheels records what it does from a checkout: its queues are
    # the example program's (which ships inside the package), not procscope's plumbing.
    demo_db = tmp_path / "demo.db"
    demo = _run(str(bin_dir / "procscope"), "demo", "--db", str(demo_db), cwd=tmp_path)
    messages = _run(str(bin_dir / "procscope"), "messages", "--db", str(demo_db), "--to", "ledger")
    assert "results" in messages and "ledger:" in messages
    # The commands it ends with work as printed: this environment's procscope by its path.
    ending = demo.split("Ask more questions of the same recording, for example:\n")[1]
    pasted = [line.strip() for line in ending.splitlines() if line.startswith("  ")]
    assert pasted and all(c.startswith(f"{bin_dir / 'procscope'} ") for c in pasted)
    for command in pasted:
        assert _run("bash", "-c", command, cwd=tmp_path).strip(), command
    # The viewer's page and assets ship in the wheel: procscope ui serves them from there.
    _assert_ui_serves_its_assets(bin_dir / "procscope", demo_db)


def _assert_ui_serves_its_assets(procscope: Path, db: Path) -> None:
    with subprocess.Popen(
        [str(procscope), "ui", "--db", str(db), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE,
        text=True,
        # (SIGINT at its default, as in a terminal, even when this suite runs as a
        # background job that inherited it ignored: the Ctrl-C below must reach it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as server:
        _fetch_assets(server)


def _fetch_assets(server: subprocess.Popen[str]) -> None:
    try:
        assert server.stdout is not None
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/?", server.stdout.readline())
        assert found, "procscope ui printed no URL"
        for path in ("/", "/static/viewer.js", "/static/viewer.css"):
            with urllib.request.urlopen(found.group(1) + path, timeout=30) as reply:
                assert reply.status == 200 and reply.read(), path
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
