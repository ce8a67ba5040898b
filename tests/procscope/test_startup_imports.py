"""What starting procscope imports: only what the configured pipeline needs (issue 12).

Each process that procscope starts in (the program under ``procscope run``, its Python
children, spawn and forkserver children) pays for every module imported at start-up.
These tests check, in real processes, that the modules a configuration does not use are
not imported, and that the configuration still records.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from .conftest import BIN, clean_environ

PROCSCOPE = str(BIN / "procscope")

LOADED = """
import sys
print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))
"""


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=clean_environ(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _run_recording(tmp_path: Path, before: str, after: str = "") -> tuple[list[str], set[str]]:
    """``before``, a span named 'recorded', then ``after``, run by ``python -c`` under
    ``procscope run`` with the trace DB: what it printed, and the names of the spans stored."""
    db = tmp_path / "t.db"
    code = before + (
        "from opentelemetry import trace\n"
        "with trace.get_tracer('app').start_as_current_span('recorded'):\n"
        "    pass\n"
    ) + after
    result = _run([PROCSCOPE, "run", "--db", str(db), "--", "python", "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    with closing(sqlite3.connect(db)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM spans")}
    return result.stdout.splitlines(), names


def test_importing_procscope_or_core_imports_no_sdk(tmp_path: Path) -> None:
    """``import procscope`` and ``procscope.core`` (what every plugin imports) load no
    OpenTelemetry SDK; the API's names are still there, loaded at first use."""
    code = (
        "import procscope, procscope.core.settings, sys\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
        "from procscope import Scope, SettingWarning, setup, configure\n"
        "from procscope.core import handle_internal_errors, Settings\n"
        "print(callable(setup), callable(configure), Scope.__name__, SettingWarning.__name__)\n"
        "print('setup' in dir(procscope), Settings.__name__)\n"
    )
    result = _run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[]",
        "True True Scope SettingWarning",
        "True Settings",
    ]


def test_procscope_run_launcher_imports_no_auto_instrumentation(tmp_path: Path) -> None:
    """``procscope run`` only execs the program: the launcher imports neither
    OpenTelemetry's auto-instrumentation, nor the read commands' SQLite code, nor what
    ``procscope demo`` needs. (Its imports are the -X importtime lines on stderr before
    the program's own start.)"""
    command = [PROCSCOPE, "run", "--db", str(tmp_path / "t.db"), "--", "python", "-c", "pass"]
    cache = str(tmp_path / "cache")
    # (the first run scans the installed entry points and caches the answer: the second,
    # as every later run, reads it; see procscope/_autostart.py)
    assert _run(command, tmp_path, XDG_CACHE_HOME=cache).returncode == 0
    result = _run(command, tmp_path, PYTHONPROFILEIMPORTTIME="1", XDG_CACHE_HOME=cache)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    # (each interpreter's lines start with the header: the launcher's, then the program's)
    headers = [i for i, line in enumerate(lines) if "| imported package" in line]
    assert len(headers) == 2, result.stderr
    launcher = {line.rsplit("|", 1)[-1].strip() for line in lines[: headers[1]]}
    assert {"procscope._cli._run", "procscope._autostart"} <= launcher
    assert "opentelemetry.instrumentation.auto_instrumentation" not in launcher
    assert "sqlite3" not in launcher
    assert "subprocess" not in launcher and "pathlib" not in launcher  # procscope demo's
    assert "opentelemetry.sdk.trace" not in launcher
    # Nor what only the program's set-up needs: OpenTelemetry's API (the configurator's),
    # typing, dataclasses (and inspect), logging, hashlib, multiprocessing.
    assert "opentelemetry.context" not in launcher
    assert not launcher & {"typing", "dataclasses", "inspect", "logging", "hashlib",
                           "multiprocessing", "pkgutil"}, sorted(launcher)


def test_program_under_procscope_run_imports_only_its_pipeline(tmp_path: Path) -> None:
    """With the trace DB (the default exporter), the program imports no OTLP, gRPC or
    protobuf code, nor the SDK's metrics and logs (which procscope does not use), nor
    OpenTelemetry's auto-instrumentation, distro and instrumentor machinery (the launcher
    found procscope's entry points alone), nor the trace DB's query side, and its spans
    are recorded in the DB."""
    prefixes = (
        "grpc",
        "google.protobuf",
        "opentelemetry.exporter",
        "opentelemetry.sdk.metrics",
        "opentelemetry.sdk._logs",
        "opentelemetry.sdk._configuration",
        "opentelemetry.instrumentation.auto_instrumentation",
        "opentelemetry.instrumentation.distro",
        "opentelemetry.instrumentation.instrumentor",
        "procscope.exporters.tracedb._db",
        "procscope.exporters.tracedb._query",
    )
    printed, names = _run_recording(tmp_path, LOADED.format(prefixes=prefixes))
    assert printed == ["[]"]
    assert "recorded" in names


def test_otlp_exporter_is_imported_when_configured(tmp_path: Path, run_app: Any) -> None:
    """The OTLP exporter (http/protobuf here) is still there when asked for."""
    code = LOADED.format(prefixes=("opentelemetry.exporter.otlp.proto.http.trace_exporter",))
    result = _run(
        [PROCSCOPE, "run", "--exporter", "otlp", "--", "python", "-c", code],
        tmp_path,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['opentelemetry.exporter.otlp.proto.http.trace_exporter']"
    ]


CHILD_REPORT = (
    "import sys\n"
    "from procscope.core import shared_state\n"
    "s = shared_state.get().scope_settings\n"
    "print('child', 'opentelemetry.instrumentation.auto_instrumentation' in sys.modules,"
    " s.level, s.sample_rate)\n"
    "from opentelemetry import trace\n"
    "with trace.get_tracer('child').start_as_current_span('child-span'):\n"
    "    pass\n"
)


def test_python_children_skip_the_entry_point_scan_the_first_process_made(
    tmp_path: Path,
) -> None:
    """Under ``procscope run``, a Python child of the program sets up with the same
    settings and records, without OpenTelemetry's auto-instrumentation scanning every
    installed package again (the program found procscope's entry points alone)."""
    db = tmp_path / "t.db"
    code = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {CHILD_REPORT!r}], check=True)\n"
    )
    result = _run(
        [
            PROCSCOPE,
            "run",
            "--db",
            str(db),
            "--level",
            "messages_only",
            "--sample-rate",
            "1",
            "--",
            "python",
            "-c",
            code,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child False messages_only 1.0"]
    with closing(sqlite3.connect(db)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM spans")}
    assert "child-span" in names


FAKE_INSTRUMENTOR = """
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor


class FakeInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return []

    def _instrument(self, **kwargs):
        print("fake instrumented", flush=True)

    def _uninstrument(self, **kwargs):
        pass
"""


def test_an_instrumentor_installed_after_the_first_process_is_loaded_in_its_children(
    tmp_path: Path,
) -> None:
    """A package installed where a child finds it (a folder on PYTHONPATH) after the
    program started is not hidden by what the program found: its instrumentor is
    loaded in the child, as OpenTelemetry's auto-instrumentation would."""
    (tmp_path / "pkgs").mkdir()
    code = (
        "import os, pathlib, subprocess, sys\n"
        f"pathlib.Path('pkgs/fakeinst.py').write_text({FAKE_INSTRUMENTOR!r})\n"
        "info = pathlib.Path('pkgs/fake_inst-1.0.dist-info')\n"
        "info.mkdir()\n"
        "(info / 'METADATA').write_text('Metadata-Version: 2.1\\nName: fake-inst\\n"
        "Version: 1.0\\n')\n"
        "(info / 'entry_points.txt').write_text('[opentelemetry_instrumentor]\\n"
        "fake = fakeinst:FakeInstrumentor\\n')\n"
        "print('program', 'PROCSCOPE_AUTOSTART' in os.environ, flush=True)\n"
        "subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
    )
    result = _run(
        [PROCSCOPE, "run", "--db", str(tmp_path / "t.db"), "--", "python", "-c", code],
        tmp_path,
        PYTHONPATH=str(tmp_path / "pkgs"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["program True", "fake instrumented"]


def _fake_instrumentor_package(pkgs: Path) -> Path:
    """A folder holding an installed package with an OpenTelemetry instrumentor."""
    pkgs.mkdir()
    (pkgs / "fakeinst.py").write_text(FAKE_INSTRUMENTOR)
    info = pkgs / "fake_inst-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-inst\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\nfake = fakeinst:FakeInstrumentor\n"
    )
    return pkgs


def test_an_instrumentor_installed_before_the_run_is_loaded_in_the_program(
    tmp_path: Path,
) -> None:
    """When another instrumentor is installed where the program finds it, the program
    takes OpenTelemetry's way and loads it, beside procscope's."""
    pkgs = _fake_instrumentor_package(tmp_path / "pkgs")
    code = "import os\nprint('program', 'PROCSCOPE_AUTOSTART' in os.environ, flush=True)\n"
    result = _run(
        [PROCSCOPE, "run", "--db", str(tmp_path / "t.db"), "--", "python", "-c", code],
        tmp_path,
        PYTHONPATH=str(pkgs),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["fake instrumented", "program False"]


def test_the_launcher_reuses_its_answer_while_the_package_folders_are_unchanged(
    tmp_path: Path,
) -> None:
    """The launcher keeps its entry-point answer in the user's cache folder: a second
    ``procscope run`` reads it instead of scanning (no importlib.metadata in the
    launcher), and the program still skips OpenTelemetry's scan; a cache that does not
    match the package folders is not trusted."""
    code = "import os\nprint('fast', bool(os.environ.get('PROCSCOPE_AUTOSTART')))\n"
    command = [PROCSCOPE, "run", "--db", str(tmp_path / "t.db"), "--", "python", "-c", code]
    cache = tmp_path / "cache"
    first = _run(command, tmp_path, XDG_CACHE_HOME=str(cache))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["fast True"]
    (answer,) = (cache / "procscope").iterdir()
    second = _run(command, tmp_path, XDG_CACHE_HOME=str(cache), PYTHONPROFILEIMPORTTIME="1")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["fast True"]
    lines = second.stderr.splitlines()
    launcher_end = next(i for i, line in enumerate(lines) if line.endswith("| procscope._cli"))
    assert not any(line.endswith("| importlib.metadata") for line in lines[:launcher_end])
    # A stale answer (a package folder the cache does not know): scanned again, and the
    # instrumentor found there is loaded in the program.
    answer.write_text('{"folders": {}, "instrumentors": []}')
    pkgs = _fake_instrumentor_package(tmp_path / "pkgs")
    third = _run(command, tmp_path, XDG_CACHE_HOME=str(cache), PYTHONPATH=str(pkgs))
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines() == ["fake instrumented", "fast False"]


def test_writing_the_trace_db_loads_no_openssl(tmp_path: Path) -> None:
    """The DB's owner writes its resource and scope rows (keyed by a SHA-1 digest) without
    loading OpenSSL through ``hashlib`` (3-4 ms of its start), and the digests are the
    ones hashlib's SHA-1 gives, as in files written before."""
    printed, names = _run_recording(tmp_path, "", after=(
        "import sys\n"
        "trace.get_tracer_provider().force_flush()\n"
        "print(sorted(m for m in ('_hashlib', 'hashlib') if m in sys.modules))\n"
    ))
    assert printed == ["[]"]
    assert "recorded" in names
    import hashlib

    from procscope.exporters.tracedb._writer import _encode, digest_of

    parts = ({"service.name": "app", "n": 1, "f": 0.5}, "https://example/schema")
    assert digest_of(*parts) == hashlib.sha1(_encode(parts).encode("utf-8")).hexdigest()
