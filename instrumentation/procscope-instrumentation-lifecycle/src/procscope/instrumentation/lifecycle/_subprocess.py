"""``subprocess.Popen`` (and ``run``, ``call``, ``check_output``, which use it), and the
child side of a Python subprocess.

Parent: a ``spawn`` span around the child's start in ``Popen()`` (``Popen._execute_child``);
when the program is Python, its environment gets ``TRACEPARENT`` (the spawn span) and
procscope's settings, and starts procscope through its sitecustomize (the environment
that the pipeline builder registered with :mod:`procscope.core.child` makes, when the
``procscope`` distribution is installed).
``Popen._handle_exitstatus``, where every wait and poll sets the return code, records the
``exit`` span.

Child: when the instrumentor is switched on in a process whose environment has
``TRACEPARENT`` (at start, by the configurator), it starts the process's ``process`` span
as a child of it and makes it the current span of the main thread, so that every root
span the program makes there is parented under the spawner's span. ``TRACEPARENT`` is
then removed from ``os.environ``: it was meant for this process only, and this process's
own children get their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from procscope.core import cheap_child, child, handoff, shared_state
from procscope.core.guard import log_internal_error
from procscope.core.saferepr import safe_repr, scrub_command
from procscope.core.threadinfo import on_main_thread

from . import _ending
from ._environ import real_environ
from ._patching import Patches
from ._processes import ReapInfo, record_reap, spawn_context
from ._program import mark_child as mark_not_the_program
from ._runtime import (
    COMMAND_ARGS,
    ENV_SPANS,
    KIND,
    PARENT_PID,
    PID,
    PROCESS_NAME,
    ROLE,
    START_METHOD,
    end_with_error,
    extract,
    inject,
    process_spans_wanted,
    record_under,
    runtime,
    scope_settings,
    this_process_attributes,
    thread_attributes,
)

_REAP = "_procscope_reap"
# Positions in Popen._execute_child(self, args, executable, preexec_fn, close_fds, pass_fds,
# cwd, env, startupinfo, creationflags, shell, ...) after args: the same from 3.10 to 3.13,
# on POSIX and Windows.
_EXECUTABLE_INDEX = 0
_PREEXEC_INDEX = 1
_ENV_INDEX = 5
_SHELL_INDEX = 8
_MAX_ARGS = 64


def _program(args: Any, executable: Any, shell: bool) -> str:
    if executable:
        try:
            # fsdecode: Popen takes a bytes executable as well as a str one.
            return os.fsdecode(executable)
        except TypeError:  # not a path: Popen raises about it, as it would plainly
            return ""
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        return text.split()[0] if shell and text.split() else text
    if isinstance(args, Sequence) and args:
        try:
            return os.fsdecode(args[0])
        except TypeError:  # not a path: Popen raises about it, as it would plainly
            return ""
    return ""


def _is_python(program: str, shell: bool) -> bool:
    base = os.path.basename(program)
    if base.startswith("python") or base == os.path.basename(sys.executable):
        return True
    try:
        return os.path.realpath(program) == os.path.realpath(sys.executable)
    except (OSError, ValueError):
        return False


def _command_args(args: Any) -> list[str]:
    """The command line, bounded and scrubbed; only the program when content capture is
    off (arguments can carry secrets: passwords, tokens)."""
    if not shared_state.settings().capture_content:
        return [_program(args, None, True)[:256]]
    if isinstance(args, (str, bytes, os.PathLike)):
        items = [os.fsdecode(args)]
    elif not isinstance(args, Sequence):
        # An iterator would be used up here, before Popen reads it; anything else is not
        # a command, which Popen raises about (as it would plainly).
        return []
    else:
        items = [
            os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else safe_repr(a, 256)
            for a in list(args)[:_MAX_ARGS]
        ]
    # Secrets masked (--password x, tokens, URLs with a password) before the cut, on a
    # bounded slice (a secret across the cut is still found whole).
    return [a if len(a) <= 256 else a[:255] + "…" for a in scrub_command([a[:320] for a in items])]


def _same_environment(program: str) -> bool:
    """The program is a Python of this very environment (same bin folder), which has
    procscope and OpenTelemetry installed. Another Python would fail to import
    OpenTelemetry's sitecustomize and say so on its stderr: it gets the trace context
    and settings only."""
    if os.sep in program:
        found: str | None = program
    else:
        import shutil  # (here: it imports bz2, lzma and zlib, about 1 ms of every start)

        found = shutil.which(program)
    if not found:
        return False
    here = os.path.dirname(os.path.abspath(sys.executable))
    return os.path.dirname(os.path.abspath(found)) == here


def child_environ(env: Mapping[str, str] | None, ctx: Any, program: str) -> dict[str, str]:
    """The environment of a Python child: trace context, settings, procscope started.

    ``env=None`` means the process's environment as the child would get it, os.putenv's
    changes included (see _environ)."""
    base = real_environ() if env is None else dict(env)
    settings = scope_settings()
    if settings is not None:
        base.update(settings.as_environ())
    if settings is not None and _same_environment(program):
        base = child.python_child_environ(base)
    base[ENV_SPANS] = runtime.spans
    base.pop("TRACESTATE", None)
    base.update({k.upper(): v for k, v in inject(ctx).items()})
    base.pop(cheap_child.ENV_TOKEN, None)
    if settings is not None and _same_environment(program):
        cheap_child.allow_in(base)
    return base


def _readable_env(env: Any) -> dict[str, str] | None:
    """The program's ``env`` as names and values, read as Popen reads it; None when Popen
    will refuse it (not a mapping, a name or value that is not a path-like string): the
    child then gets the program's ``env`` untouched, and Popen raises as it would plainly.
    """
    try:
        return {os.fsdecode(name): os.fsdecode(value) for name, value in env.items()}
    except Exception:  # noqa: BLE001 -- the program's argument, for Popen to refuse
        return None


def _environ_changes(before: Mapping[str, str], after: Mapping[str, str]) -> Callable[[], None]:
    """A function that turns the environment ``before`` into ``after`` in place."""
    updates = {name: value for name, value in after.items() if before.get(name) != value}
    removals = [name for name in before if name not in after]

    def apply() -> None:
        for name in removals:
            os.unsetenv(name)
        for name, value in updates.items():
            os.putenv(name, value)

    return apply


def _after_setting_environ(preexec_fn: Any, ctx: Any, program: str) -> Any:
    """The program's preexec_fn, run after procscope's variables are set in the child.

    With ``env=None`` and a preexec_fn, passing an environment would lose what the
    preexec_fn sets in the child with os.putenv (it runs after the environment is
    chosen, before exec). So the child keeps the process's environment, and procscope's
    variables are set in it just before the program's preexec_fn runs, which can still
    change them: in the child, after fork, before exec (one thread; the program already
    runs Python code there)."""
    before = real_environ()
    apply = _environ_changes(before, child_environ(before, ctx, program))

    def preexec() -> None:
        try:
            apply()
        except Exception:  # noqa: BLE001 -- never fail the program's child for procscope
            pass
        preexec_fn()

    return preexec


def _pass_context(pargs: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any, program: str) -> Any:
    """Popen's arguments, with the trace context and settings handed to a Python child
    through its environment, whose meaning stays the program's: ``env=None`` still means
    the process's real environment, and a preexec_fn still sees (and sets) it."""
    env_given = len(pargs) > _ENV_INDEX
    env = pargs[_ENV_INDEX] if env_given else kwargs.get("env")
    if env is None:
        preexec_given = len(pargs) > _PREEXEC_INDEX
        preexec_fn = pargs[_PREEXEC_INDEX] if preexec_given else kwargs.get("preexec_fn")
        if preexec_fn is not None:
            wrapped = _after_setting_environ(preexec_fn, ctx, program)
            if preexec_given:
                return (*pargs[:_PREEXEC_INDEX], wrapped, *pargs[_PREEXEC_INDEX + 1 :]), kwargs
            return pargs, {**kwargs, "preexec_fn": wrapped}
        new_env = child_environ(None, ctx, program)
    else:
        readable = _readable_env(env)
        if readable is None:
            return pargs, kwargs
        new_env = child_environ(readable, ctx, program)
    if env_given:
        return (*pargs[:_ENV_INDEX], new_env, *pargs[_ENV_INDEX + 1 :]), kwargs
    return pargs, {**kwargs, "env": new_env}


def _argument(pargs: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return pargs[index] if len(pargs) > index else kwargs.get(name)


def _make_execute_child(original: Any) -> Any:
    # Popen._execute_child, not Popen.__init__: Popen.__init__ stays the original, with its
    # signature, and no procscope frame stands between the program and it. That frame
    # mattered: subprocess._text_encoding walks up the frames of subprocess.py and warns
    # (EncodingWarning, python -X warn_default_encoding) at the first other file's, which
    # was ours, and the warnings registry then swallowed the program's next one. Every
    # Popen starts its child here, after the arguments are checked (so Popen's own errors
    # for bad arguments come with no span, as plainly, with nothing printed).
    def _execute_child(self: Any, args: Any, *pargs: Any, **kwargs: Any) -> None:
        if not runtime.active:
            return original(self, args, *pargs, **kwargs)  # type: ignore[no-any-return]
        span = None
        info = None
        try:
            shell = bool(_argument(pargs, kwargs, _SHELL_INDEX, "shell"))
            executable = _argument(pargs, kwargs, _EXECUTABLE_INDEX, "executable")
            program = _program(args, executable, shell)
            name = os.path.basename(program) or "subprocess"
            attributes = thread_attributes()
            attributes[KIND] = "subprocess"
            attributes[ROLE] = "spawn"
            attributes[PROCESS_NAME] = name
            attributes[START_METHOD] = "subprocess"
            attributes[PARENT_PID] = os.getpid()
            attributes[COMMAND_ARGS] = _command_args(args)
            span, ctx = spawn_context(name, attributes)
            if _is_python(program, shell):
                pargs, kwargs = _pass_context(pargs, kwargs, ctx, program)
            info = ReapInfo(ctx if span is not None else None, name, "subprocess", "subprocess")
        except Exception:  # noqa: BLE001
            log_internal_error()
        try:
            original(self, args, *pargs, **kwargs)
        except BaseException as exc:
            if span is not None:
                end_with_error(span, exc)
                span.end()
            raise
        try:
            if span is not None:
                span.set_attribute(PID, self.pid)
                span.end()
            if info is not None and info.ctx is not None:
                if self.returncode is not None:  # already reaped (a very short child)
                    record_reap(info, self.pid, self.returncode)
                    _cheap_child_ended(self.pid)
                else:
                    self.__dict__[_REAP] = info
        except Exception:  # noqa: BLE001
            log_internal_error()
        return None

    return _execute_child


def _make_handle_exitstatus(original: Any) -> Any:
    def _handle_exitstatus(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if _REAP in self.__dict__:
            try:
                info = self.__dict__.pop(_REAP, None)
                if info is not None:
                    record_reap(info, self.pid, self.returncode)
                    _cheap_child_ended(self.pid)
            except Exception:  # noqa: BLE001
                log_internal_error()
        return result

    return _handle_exitstatus


def _cheap_child_ended(pid: int) -> None:
    """A reaped child that was cheap to its end: its run's span made now (in the top
    process, which alone makes them), not at the program's end (the record is read
    here, on the program's thread; see _cheap_children.collect_later)."""
    if handoff.is_top_process() and cheap_child.record_left(pid):
        from . import _cheap_children

        _cheap_children.collect_later(pid)


def start_from_environment() -> None:
    """In a Python subprocess started with TRACEPARENT: its ``process`` span (from the
    child's start, also where a cheap child sets its pipeline up only now)."""
    carrier = {"traceparent": os.environ.get("TRACEPARENT", "")}
    if os.environ.get("TRACESTATE"):
        carrier["tracestate"] = os.environ["TRACESTATE"]
    late = cheap_child.upgraded_start()
    ctx = extract(carrier)
    if ctx is None or not on_main_thread():
        return
    os.environ.pop("TRACEPARENT", None)
    os.environ.pop("TRACESTATE", None)
    mark_not_the_program()
    if _ending.current_run() is not None:
        return
    if process_spans_wanted() and record_under(ctx):
        if late is not None:
            start_time, name = late[0], late[1]
        else:
            start_time = None
            argv0 = sys.argv[0] if sys.argv else ""
            name = os.path.basename(argv0) if argv0 not in ("", "-c", "-m") else "python"
        attributes = this_process_attributes("subprocess", "run", name)
        attributes[START_METHOD] = "subprocess"
        span = _ending.begin_run("process " + name, attributes, ctx, start_time=start_time)
        _ending.attach_as_main_context(span, ctx)
        _ending.watch_main_thread_exceptions()
        _ending.end_at_exit()
        # No SIGTERM watch (_sigwatch): this interpreter runs a program of its own, like
        # the program at the top, which has none; its thread and wakeup pipe were fds
        # the program saw (CPython's test_pass_fds_redirected lists them).
    else:
        from opentelemetry import context as otel_context

        otel_context.attach(ctx)


def instrument(patches: Patches) -> None:
    patches.patch(subprocess.Popen, "_execute_child", _make_execute_child)
    patches.patch(subprocess.Popen, "_handle_exitstatus", _make_handle_exitstatus)
