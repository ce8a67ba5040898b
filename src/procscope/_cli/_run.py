"""``procscope run`` and ``procscope demo``: run a program with procscope switched on."""

from __future__ import annotations

import argparse
import os
import sys

from procscope.core.runs import ENV_RUN_COMMAND, ENV_RUN_ID, command_text, new_run_id
from procscope.core.settings import (
    DEFAULT_DB,
    ENV_CAPTURE_CONTENT,
    ENV_DB,
    ENV_EXPORTER,
    ENV_LEVEL,
    ENV_SAMPLE_RATE,
    ENV_SAMPLING,
    BadSettingError,
    parse_bool,
    parse_db,
    parse_exporters,
    parse_level,
    parse_rate,
    parse_sampling_mode,
)

from .._run_notice import ENV_RUN_NOTICE
from ._invocation import procscope_command, which

TYPE_CHECKING = False  # (not typing's: see _PACKAGE_DIR)
if TYPE_CHECKING:
    from typing import Any

EXIT_USAGE = 2
# The procscope package's folder. os.path, not pathlib: `procscope run` only execs the
# program, and each module it imports delays the program's start.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def auto_instrumentation_dir() -> str:
    """The folder of OpenTelemetry's sitecustomize, which runs the distro at start-up.

    Found, not imported: importing it brings in the whole auto-instrumentation machinery
    (packaging, importlib.metadata, wrapt, asyncio: about 100 ms) into ``procscope run``,
    which only execs the program."""
    from importlib.util import find_spec

    spec = find_spec("opentelemetry.instrumentation.auto_instrumentation")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return os.path.abspath(next(iter(spec.submodule_search_locations)))


def startup_dir() -> str:
    """The folder of procscope's sitecustomize: OpenTelemetry's auto-instrumentation in a
    Python that has procscope, nothing in any other (see _sitecustomize/sitecustomize.py)."""
    return os.path.join(_PACKAGE_DIR, "_sitecustomize")


def instrumented_environ(
    base: dict[str, str],
    *,
    db: str | None = None,
    level: str | None = None,
    sample_rate: str | None = None,
    exporter: str | None = None,
    capture_content: str | None = None,
    sampling: str | None = None,
) -> dict[str, str]:
    """The environment under which any Python program starts with procscope set up.

    Options given here override the environment; every child process that the program
    starts inherits this environment and so the same settings.
    """
    env = dict(base)
    env[ENV_DB] = os.path.abspath(db or env.get(ENV_DB) or DEFAULT_DB)
    for name, value in (
        (ENV_LEVEL, level),
        (ENV_SAMPLE_RATE, sample_rate),
        (ENV_EXPORTER, exporter),
        (ENV_CAPTURE_CONTENT, capture_content),
        (ENV_SAMPLING, sampling),
    ):
        if value is not None:
            env[name] = value
    env["OTEL_PYTHON_DISTRO"] = "procscope"
    env["OTEL_PYTHON_CONFIGURATOR"] = "procscope"
    # OpenTelemetry's own sitecustomize is taken out (under opentelemetry-instrument):
    # procscope's starts OpenTelemetry's auto-instrumentation itself, once.
    ours, theirs = startup_dir(), auto_instrumentation_dir()
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p not in ("", ours, theirs)]
    env["PYTHONPATH"] = os.pathsep.join([ours, *paths])
    from .._autostart import publish_for

    publish_for(env)
    return env


def resolve_command(command: list[str]) -> list[str]:
    """A bare ``python`` or ``python3`` means the interpreter procscope is installed in.

    Otherwise ``procscope run -- python app.py`` from an unactivated virtual environment
    would start the system Python, which cannot load procscope, and record nothing.
    """
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


def _add_setting_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="trace DB file (default: $PROCSCOPE_DB or ./procscope.db)")
    parser.add_argument(
        "--level", help="full, messages_only, states_only, minimal or off (default: full)"
    )
    parser.add_argument("--sample-rate", help="share of traces kept, 0.0 to 1.0 (default: 1.0)")
    parser.add_argument(
        "--exporter", help="tracedb, otlp, console, none, or several comma-separated"
    )
    parser.add_argument("--capture-content", help="record message and state values: true/false")
    parser.add_argument(
        "--sampling", help="head (decide at the start of a trace) or tail (decide at its end)"
    )


_OPTION_PARSERS = {
    "db": ("--db", parse_db),
    "level": ("--level", parse_level),
    "sample_rate": ("--sample-rate", parse_rate),
    "exporter": ("--exporter", parse_exporters),
    "capture_content": ("--capture-content", parse_bool),
    "sampling": ("--sampling", parse_sampling_mode),
}


def _settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The options given, checked here so that a bad one is reported under the option's
    own name (the program would otherwise name the environment variable it came in):
    it is ignored, as a bad setting is everywhere, and the program runs on."""
    settings: dict[str, Any] = {}
    for key, (option, parse) in _OPTION_PARSERS.items():
        value = getattr(args, key)
        if value is None:
            continue
        try:
            parse(value)
        except BadSettingError as exc:
            sys.stderr.write(f"procscope run: bad value for {option}: {value!r} ({exc}); ignored\n")
            continue
        settings[key] = value
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        sys.stderr.write("procscope run: no command given (procscope run -- CMD ...)\n")
        return EXIT_USAGE
    command = resolve_command(command)
    # A path to a file that exists but cannot be run (not executable, a folder) is left to
    # execvpe below, whose reason ("Permission denied") is truer than "not found".
    if which(command[0]) is None and not (
        os.sep in command[0] and os.path.exists(command[0])
    ):
        sys.stderr.write(f"procscope run: command not found: {command[0]}\n")
        return EXIT_USAGE
    env = instrumented_environ(dict(os.environ), **_settings_of(args))
    # A new run, even when started from inside a recorded program, and ONE run for all the
    # command starts: a shell running two Python programs in turn hands both the same id.
    # The first process to set up records the command (procscope.core.runs).
    env[ENV_RUN_ID] = new_run_id()
    env[ENV_RUN_COMMAND] = command_text(command)
    env.pop(ENV_RUN_NOTICE, None)
    if _stderr_is_terminal():
        # The program's top process says where it recorded when it ends (_run_notice).
        env[ENV_RUN_NOTICE] = procscope_command()
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child process: the program then gets SIGINT and SIGTERM directly and
    # its exit status is ours, with nothing of procscope left running beside it.
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        sys.stderr.write(f"procscope run: cannot run {command[0]}: {exc.strerror}\n")
        return EXIT_USAGE
    return 0  # not reached


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def demo_program() -> str:
    """The bundled example program (examples/demo.py, shipped inside the package)."""
    return os.path.join(_PACKAGE_DIR, "_demo_app.py")


def cmd_demo(args: argparse.Namespace) -> int:
    import subprocess
    import tempfile

    from ._demo_report import print_demo_report

    if args.db:
        db = os.path.abspath(args.db)
        if os.path.exists(db):
            # The report reads the whole DB: it must hold this run only. And a demo must
            # never write into, or delete, a DB that somebody's data may be in.
            sys.stderr.write(f"procscope demo: {db} exists; give --db a new file\n")
            return EXIT_USAGE
        if not os.path.isdir(os.path.dirname(db)):
            sys.stderr.write(f"procscope demo: no folder {os.path.dirname(db)}\n")
            return EXIT_USAGE
    else:
        db = os.path.join(tempfile.mkdtemp(prefix="procscope-demo-"), "procscope.db")
    env = instrumented_environ(dict(os.environ), db=db, exporter="tracedb", level="full")
    env.pop(ENV_RUN_ID, None)
    env.setdefault("OTEL_SERVICE_NAME", "procscope-demo")
    print(
        "procscope demo: running the example program (examples/demo.py) under procscope, "
        f"recording into {db}"
    )
    print("(one worker process is meant to crash: its traceback below is part of the demo)\n")
    sys.stdout.flush()
    completed = subprocess.run([sys.executable, demo_program()], env=env, check=False)
    print(f"\nprocscope demo: the program exited with status {completed.returncode}\n")
    sys.stdout.flush()
    if completed.returncode != 0:
        return completed.returncode
    return print_demo_report(db)


def add_parser(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a program with procscope switched on, children included",
        description="Run CMD with procscope set up in it and in every Python process it "
        "starts. The exit status is the program's.",
    )
    _add_setting_options(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run.set_defaults(func=cmd_run)

    demo = subparsers.add_parser(
        "demo",
        help="run the bundled example and print what it recorded",
        description="Run a small multi-process program (processes, queues, a stateful "
        "worker, one crash) under procscope and print what was recorded.",
    )
    demo.add_argument("--db", help="a new trace DB file (default: one in a new temporary folder)")
    demo.set_defaults(func=cmd_demo)
