"""Cheap children: a Python subprocess records its run without OpenTelemetry, until it
does something more worth recording.

A Python subprocess of a traced program used to set procscope's whole pipeline up as it
started (OpenTelemetry's API and SDK, procscope's plugins, the exporter): about 90 ms
added to every such child, most of a short child's life, for a child that often records
nothing but its own run. A child that may (:func:`start`) now only notes its start, and:

* at the first import of a module whose use procscope records (:func:`_is_trigger`:
  queue, multiprocessing, concurrent, asyncio, subprocess, transitions, OpenTelemetry,
  procscope's API), or at the first start of a thread, sets the pipeline up as before,
  as soon as the import under way has finished (:func:`_soon`); the run's span then
  starts at the child's start;
* when it ends (atexit, ``os._exit``, SIGTERM; after an unhandled exception or not),
  writes one small record into the program's spool directory
  (``cheap-<pid>-<start>.child``, ``marshal``): its times, exit code or signal, the
  exception's event, and what OpenTelemetry's process detector would read. The top
  process makes it into the run's span, under the child's pid and resource
  (``procscope.instrumentation.lifecycle._cheap_children``).

Which children may: those whose parent says so in :data:`ENV_TOKEN`, a digest of the
``OTEL_*`` and ``PROCSCOPE_*`` variables it handed the child. It does only when the top
process can make the run's span as the child would have (the same resource settings, the
same run, no tail sampling). A child whose variables differ from what its parent gave it
(a shell between them set one) takes the full path.

This module runs in every such child before the program, so it imports nothing that a
Python does not already have at start (``os``, ``sys``, ``time``, ``marshal``, ``_thread``,
``_signal``; ``zlib`` is an extension module of a fraction of a millisecond).
"""

import marshal
import os
import sys
import time

ENV_TOKEN = "PROCSCOPE_CHEAP_CHILD"
# Set by the top process when it makes cheap children's spans (allow_children).
ENV_ORIGIN = "PROCSCOPE_CHEAP_ORIGIN"
# (runs.ENV_RUN_ID, runs.ENV_RUN_COMMAND: runs imports scrubbing, hence re)
ENV_RUN_ID = "PROCSCOPE_RUN_ID"
ENV_RUN_COMMAND = "PROCSCOPE_RUN_COMMAND"
# (handoff.ENV_DIR: handoff itself imports typing, a few ms)
ENV_SPOOL = "PROCSCOPE_HANDOFF_DIR"
PREFIX = "cheap-"
SUFFIX = ".child"
FORMAT = 1

# A first import of these (or of a module inside them) means the child may do something
# procscope records: threads, queues, processes, tasks, state machines, its own spans.
_TRIGGER_PACKAGES = frozenset({
    "queue", "multiprocessing", "concurrent", "asyncio", "subprocess",
    "transitions", "opentelemetry",
})
# Modules that setting the pipeline up may import: one of these half imported (logging,
# importing threading) must be finished first, or set-up would get it half made. A
# program's own module half imported does not matter (set-up never imports it).
_SETUP_MAY_IMPORT = frozenset({
    "opentelemetry", "procscope", "typing_extensions", "importlib_metadata", "zipp",
    "wrapt", "deprecated", "packaging", "google", "transitions", "psutil",
})

_state: dict = {
    "pid": 0,  # this child's pid while it is cheap; 0 before, after an upgrade, in a fork
    "start_ns": 0,
    "name": "",
    "ppid": 0,
    "thread_id": 0,
    "traceparent": "",
    "tracestate": None,
    "sampled": False,
    "spool": "",
    "upgrade": None,
    "upgraded": False,  # the pipeline is set up (or is being set up)
    "wait_frame": None,
    "pending": 0,  # UPGRADE or WATCH_THREADS, waiting for wait_frame's return
    "thread_start": None,  # threading.Thread.start while the first start is watched
    "failure": None,
    "original_exit": None,
    "sigterm": False,
}


def _digest(env, keep) -> str:
    import zlib

    parts = sorted(f"{name}={value}" for name, value in env.items() if keep(name))
    data = "\0".join(parts).encode("utf-8", "surrogateescape")
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def environ_digest(env) -> str:
    """The digest of the ``OTEL_*`` and ``PROCSCOPE_*`` variables of ``env`` (a mapping):
    the settings and resource a child starts with."""
    return _digest(env, lambda name: name.startswith(("OTEL_", "PROCSCOPE_")) and name != ENV_TOKEN)


# What the top process's resource and exporters were made from, besides the process
# itself and procscope's settings (which every child is handed: Settings.as_environ).
_ORIGIN_VARIABLES = frozenset({
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
    "OTEL_SDK_DISABLED", ENV_RUN_ID,
})


def origin_digest(env) -> str:
    """The digest of what makes a process's resource, besides the process itself, and
    where its spans go: the resource's variables, the run's id, the exporters' settings."""
    return _digest(
        env, lambda name: name in _ORIGIN_VARIABLES or name.startswith("OTEL_EXPORTER_")
    )


def allow_children() -> None:
    """In the top process, once its pipeline is set up: let its Python subprocesses (and
    theirs) be cheap. The top process makes their runs' spans from its own resource: it
    allows only children whose resource variables are what its resource was made from."""
    os.environ[ENV_ORIGIN] = origin_digest(os.environ)


def disallow_children() -> None:
    """In the top process, at its shutdown: no more cheap children."""
    os.environ.pop(ENV_ORIGIN, None)


_collector: list = []


def set_collector(collect) -> None:
    """Name the function that makes ended cheap children's records into spans (the
    lifecycle instrumentor's), for :func:`collect_ended`."""
    _collector[:] = [collect]


def collect_ended(changed_only: bool = False) -> int:
    """In the top process, before its exporters close (and, ``changed_only``, on their
    schedule while it runs): every cheap child's record left made into spans; returns
    how many."""
    return _collector[0](changed_only) if _collector else 0


def record_left(pid: int) -> bool:
    """Whether the ended cheap child ``pid`` left a record (in the top process: then it
    is made into a span now rather than at the top process's end)."""
    folder = os.environ.get(ENV_SPOOL)
    if not folder or os.environ.get(ENV_ORIGIN) is None:
        return False
    prefix = f"{PREFIX}{pid}-"
    try:
        return any(name.startswith(prefix) for name in os.listdir(folder))
    except OSError:
        return False


def allow_in(base: dict) -> None:
    """``base`` (a Python child's environment, as its parent hands it over) made to let the
    child be cheap, when it may: the top process allows it, and the child's resource
    variables, and this process's, are those of the top process's resource."""
    origin = os.environ.get(ENV_ORIGIN)
    if not origin or base.get(ENV_ORIGIN) != origin or ENV_RUN_COMMAND in base:
        return
    if origin_digest(base) != origin or origin_digest(os.environ) != origin:
        return
    base[ENV_TOKEN] = environ_digest(base)


def parse_traceparent(value: str):
    """(trace id, span id, sampled) of a W3C ``traceparent``, or None."""
    parts = value.strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & 1)


def start(upgrade) -> bool:
    """In a Python subprocess at start-up: become a cheap child if the parent said this
    one may. ``upgrade()`` sets the pipeline up as a child's start-up would have. False
    (nothing done) when this child takes the full path."""
    env = os.environ
    token = env.get(ENV_TOKEN)
    if not token or _state["pid"]:
        return False
    try:
        if token != environ_digest(env):
            return False
        # Only where the full start-up would run procscope's own instrumentors alone,
        # with no other installed since (its own check: procscope._autostart).
        from ._autostart_env import ENV_AUTOSTART, folders_unchanged, procscope_chosen

        published = env.get(ENV_AUTOSTART, "")
        if not published or not procscope_chosen(env) or not folders_unchanged(published):
            return False
        traceparent = env.get("TRACEPARENT", "")
        parent = parse_traceparent(traceparent)
        spool = env.get(ENV_SPOOL, "")
        if parent is None or not spool:
            return False
        import _thread

        argv0 = sys.argv[0] if sys.argv else ""
        _state.update(
            pid=os.getpid(), start_ns=time.time_ns(), ppid=os.getppid(),
            thread_id=_thread.get_native_id(), traceparent=traceparent,
            tracestate=env.get("TRACESTATE"), sampled=parent[2], spool=spool,
            upgrade=upgrade, upgraded=False, failure=None,
            # (as the full path names it: _subprocess.start_from_environment)
            name=os.path.basename(argv0) if argv0 not in ("", "-c", "-m") else "python",
        )
        # Out of the environment, as the full path takes them: not the context of a
        # grandchild started some other way.
        for name in ("TRACEPARENT", "TRACESTATE", ENV_TOKEN):
            env.pop(name, None)
        sys.meta_path.insert(0, _WATCH)
        sys.excepthook = _excepthook_chain(sys.excepthook)
        _state["original_exit"] = os._exit
        os._exit = _exit
        import atexit

        atexit.register(_at_exit)
        os.register_at_fork(after_in_child=_forget)
        if parent[2]:
            _watch_sigterm()
        if "threading" in sys.modules:  # (imported before this ran: by a .pth file, say)
            _watch_threads()
    except Exception:  # noqa: BLE001 -- then the full path, as before
        _forget()
        return False
    return True


def is_cheap() -> bool:
    """True while this process is a cheap child that has not set the pipeline up."""
    return _state["pid"] == os.getpid() and not _state["upgraded"]


def upgraded_start():
    """(start time in ns, name, traceparent, tracestate) of a cheap child whose pipeline is
    being set up now, for its run's span; None in any other process."""
    if _state["pid"] != os.getpid() or not _state["upgraded"]:
        return None
    return _state["start_ns"], _state["name"], _state["traceparent"], _state["tracestate"]


# --- when to set the pipeline up -----------------------------------------------------------


def _is_trigger(name: str) -> bool:
    top = name.partition(".")[0]
    if top in _TRIGGER_PACKAGES:
        return True
    return top == "procscope" and not name.startswith("procscope.core")


class _Watch:
    """On ``sys.meta_path`` while the child is cheap; finds nothing itself."""

    def find_spec(self, fullname, path=None, target=None):
        if is_cheap():
            if _is_trigger(fullname):
                _soon(UPGRADE, sys._getframe(1))
            elif fullname == "threading":
                _soon(WATCH_THREADS, sys._getframe(1))
        return None

    def invalidate_caches(self) -> None:
        pass


_WATCH = _Watch()
# What to do once the imports under way have finished (_soon): set the pipeline up, or
# only watch for the first thread's start (threading is imported by logging and others
# that start no thread: such a child stays cheap).
UPGRADE, WATCH_THREADS = 2, 1


def _soon(action: int, frame) -> None:
    """Do ``action`` once the import under way has finished (at once where none is).

    Not now: this runs inside the import system (under its global lock, the module not
    made yet), and set-up imports the very module being looked for. Not right after the
    module either: it may be imported by another that set-up needs too (``logging``
    imports ``threading`` at its top), still half made. So: after the outermost import,
    on this thread's stack, of a module that set-up may import, by a profile function
    that waits for that frame's return (a few hundred calls)."""
    try:
        if action <= _state["pending"]:
            return  # (as much is already waiting)
        if _state["wait_frame"] is not None:
            _state["pending"] = action
            return
        wait_for = _import_under_way(frame)
        if wait_for is None:
            _state["pending"] = action
            _act()
        elif sys.getprofile() is None:
            _state["pending"] = action
            _state["wait_frame"] = wait_for
            sys.setprofile(_wait)
        # else a profiler owns the hook: this child stays cheap (docs/lifecycle.md says
        # what it then records)
    except Exception:  # noqa: BLE001 -- never disturb the program
        pass


def _import_under_way(frame):
    """The frame of the outermost import on this stack of a module that set-up may
    import (the standard library's, OpenTelemetry's, ...), or None."""
    found = None
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_find_and_load" and code.co_filename.startswith("<frozen"):
            name = frame.f_locals.get("name")
            top = name.partition(".")[0] if isinstance(name, str) else ""
            if top in _SETUP_MAY_IMPORT or top in getattr(sys, "stdlib_module_names", ()):
                found = frame
        frame = frame.f_back
    return found


def _wait(frame, event, arg) -> None:
    if event == "return" and frame is _state["wait_frame"]:
        sys.setprofile(None)
        _state["wait_frame"] = None
        _act()


def _act() -> None:
    action, _state["pending"] = _state["pending"], 0
    if action == UPGRADE:
        _upgrade()
    elif action == WATCH_THREADS:
        _watch_threads()


def _watch_threads() -> None:
    """Set the pipeline up at the first ``Thread.start`` (threading is imported, whole)."""
    thread = getattr(sys.modules.get("threading"), "Thread", None)
    if thread is None or not is_cheap() or _state["thread_start"] is not None:
        return
    start = thread.__dict__.get("start")
    if start is None:
        return
    _state["thread_start"] = start
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(_start_thread, name, getattr(start, name, None))
    _start_thread.__wrapped__ = start  # type: ignore[attr-defined]
    thread.start = _start_thread


def _start_thread(self, *args, **kwargs):
    thread = sys.modules["threading"].Thread
    start = _state["thread_start"]
    if thread.__dict__.get("start") is _start_thread:
        thread.start = start  # (the class's own again: set-up then patches it)
    if is_cheap():
        _soon(UPGRADE, sys._getframe(1))
    return thread.start(self, *args, **kwargs)


def _upgrade() -> None:
    """Set the pipeline up now (once), with the context the parent handed this child."""
    if not is_cheap():
        return
    _state["upgraded"] = True
    _retire()
    env = os.environ
    env["TRACEPARENT"] = _state["traceparent"]
    if _state["tracestate"] is not None:
        env["TRACESTATE"] = _state["tracestate"]
    try:
        _state["upgrade"]()
    except Exception:  # noqa: BLE001 -- as a failed start-up: the program runs on
        pass


def _retire() -> None:
    try:
        sys.meta_path.remove(_WATCH)
    except ValueError:
        pass


def _forget() -> None:
    """In a fork child of a cheap child (and where starting failed): no longer one."""
    _state["pid"] = 0
    _state["wait_frame"] = None
    _state["pending"] = 0
    _retire()


# --- how it ends ---------------------------------------------------------------------------


def called_by_the_interpreter(hook_frame) -> bool:
    """Whether ``sys.excepthook`` was called by the interpreter for an exception that ended
    the main thread, rather than by the program's code.

    The interpreter calls it once none of the program's code is left on the stack: the
    outermost frame is then the installed hook's (ours, or the program's own hook that
    calls ours). Called from the program's code instead (code.interact, an IDE, a
    threading.excepthook handing a thread's exception over), the hook only reports an
    exception that the process lives on after: no failure of the process. Nor is it under
    ``python -i``, where the interactive prompt follows."""
    if sys.flags.inspect:
        return False
    outermost = hook_frame
    while outermost.f_back is not None:
        outermost = outermost.f_back
    if outermost is hook_frame:
        return True
    installed = sys.excepthook
    function = getattr(installed, "__func__", installed)
    code = getattr(function, "__code__", None)
    if code is None:  # a callable object: its class's __call__
        for klass in type(installed).__mro__:
            if "__call__" in vars(klass):
                code = getattr(vars(klass)["__call__"], "__code__", None)
                break
    # A hook whose code cannot be found (a functools.partial, a C callable): taken for
    # the interpreter's call, as every call was before.
    return code is None or outermost.f_code is code


def _excepthook_chain(previous):
    def excepthook(exc_type, exc, tb):
        try:
            if (
                is_cheap() and _state["failure"] is None
                and isinstance(exc, BaseException) and not isinstance(exc, SystemExit)
                and called_by_the_interpreter(sys._getframe())
            ):
                _state["failure"] = exc
        except Exception:  # noqa: BLE001
            pass
        previous(exc_type, exc, tb)

    return excepthook


def _at_exit() -> None:
    if not is_cheap():
        return
    failure = _state["failure"]
    _write_end(None, None, failure)
    if isinstance(failure, KeyboardInterrupt):
        # The interpreter ends a process that an unhandled KeyboardInterrupt stopped by
        # SIGINT, if the flag that says so is still set after atexit: formatting the
        # exception cleared it (importing traceback execs strings, namedtuple's: every
        # exec or eval of a string clears it). An exec of a string that raises
        # KeyboardInterrupt sets it again.
        try:
            exec("raise KeyboardInterrupt")
        except KeyboardInterrupt:
            pass


def _exit(code, /):
    try:
        if is_cheap():
            _write_end(code if isinstance(code, int) else None, None)
    except BaseException:  # noqa: BLE001 -- os._exit must exit, whatever happened
        pass
    _state["original_exit"](code)


def _watch_sigterm() -> None:
    """A sampled child's SIGTERM is recorded on its run (as the full path's handler does),
    where the program left SIGTERM to kill it."""
    import _signal

    if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:
        _signal.signal(_signal.SIGTERM, _on_sigterm)
        _state["sigterm"] = True


def _on_sigterm(signum, frame) -> None:
    import _signal

    try:
        if is_cheap():
            _write_end(None, signum)
    except Exception:  # noqa: BLE001 -- never stop the process from dying
        pass
    # Die as SIGTERM would have made us die, so that the parent sees the same status.
    _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_on_sigterm._procscope_sigterm = True  # type: ignore[attr-defined]  # (see _ending)


def _write_end(code, exit_signal, failure=None) -> None:
    """The run's record, for the top process to make into its span (once): its end,
    and the exception that ended it, if one did."""
    if _state["pid"] != os.getpid():
        return
    _state["pid"] = 0
    _retire()
    if not _state["sampled"]:
        return  # (the full path records no span for an unsampled child's run either)
    from ._exception_event import exception_fields
    from ._spooldir import made_private

    folder = _state["spool"]
    if not made_private(folder):
        return
    record = {
        "format": FORMAT,
        "pid": os.getpid(),
        "ppid": _state["ppid"],
        "thread_id": _state["thread_id"],
        "start_ns": _state["start_ns"],
        "end_ns": time.time_ns(),
        "name": _state["name"],
        "traceparent": _state["traceparent"],
        "tracestate": _state["tracestate"],
        "code": code,
        "signal": exit_signal,
        "failure": None if failure is None else exception_fields(failure),
        # What OpenTelemetry's process resource detector reads, read here.
        "executable": sys.executable or "",
        "orig_argv": list(getattr(sys, "orig_argv", sys.argv)),
        "version": sys.version,
        "version_info": tuple(sys.version_info),
        "implementation": sys.implementation.name,
        "uid": os.getuid(),
        "run_id": os.environ.get(ENV_RUN_ID),
    }
    name = f"{PREFIX}{record['pid']}-{record['start_ns']}{SUFFIX}"
    temporary = os.path.join(folder, name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, marshal.dumps(record))
        finally:
            os.close(fd)
        os.rename(temporary, os.path.join(folder, name))
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def read(path: str):
    """A record written by :func:`_write_end`, or None when it is not one."""
    try:
        with open(path, "rb") as file:
            record = marshal.loads(file.read(1 << 20))
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record
