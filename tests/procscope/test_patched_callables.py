"""What procscope replaces keeps what the program, pickle and inspect see of it.

Every function the instrumentors install (taken from their own patch tables, so a new patch
is covered without touching this file) pickles by reference as the original did, has the
original's signature, name and documentation and ``__wrapped__``, and after uninstrument
the original is back by identity. Then the cases real programs and CPython's own tests met:
``os._exit``/``sys.exit`` as spawn and forkserver targets, ``submit(fn, self=...)``, the
``EncodingWarning`` of ``Popen``, and a multiprocessing Queue's feeder error hook. Each
program runs plainly and under ``procscope.setup()``, in real processes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

# Set up at full level, sampling every message, when TRACED is set; plainly otherwise. On
# one line, so that the program's own lines are numbered the same in both runs.
SETUP = (
    "import os, procscope; os.environ.get('TRACED') and procscope.setup(level='full', "
    "sample_rate=1.0, exporter='tracedb', db='trace.db')\n"
)

WALK = SETUP + """
# asyncio, multiprocessing and ProcessPoolExecutor's module after setup: patched on import
import asyncio, concurrent.futures.process, inspect, json, multiprocessing, pickle, re, sys, types
from procscope.instrumentation.lifecycle import _switch as lifecycle
from procscope.instrumentation.messaging import _switch as messaging

def patch_table():
    # (owner, name, original) for every name the instrumentors replaced; a name they
    # added (a queue class's __reduce_ex__) has no original and is left out.
    rows = [tuple(row) for row in lifecycle.PATCHES._saved]
    for family in messaging.FAMILIES:
        family = getattr(family, "_family", family)  # (made when its module is imported)
        for owner, name, original, _ in family._patcher._saved:
            if not isinstance(owner, dict) and name in owner.__dict__ and (
                    type(original).__name__ != "object"):
                rows.append((owner, name, original))
    return rows

def where(owner):
    if isinstance(owner, types.ModuleType):
        return [owner.__name__]
    return [owner.__module__, owner.__qualname__]

def installed(owner, name):
    return owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)

def function(obj):
    return obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj

def pickles_back(obj):
    try:
        back = pickle.loads(pickle.dumps(obj))
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)
    return back is obj or back == obj

def signature(obj):
    try:
        # (a sentinel default, such as 3.10's asyncio loop=<object object at 0x...>, shows
        # its address: another in each process)
        return re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(obj)))
    except (TypeError, ValueError) as exc:
        return type(exc).__name__

def lookup(path, name):
    module = __import__(path[0], fromlist=["_"])
    for part in path[1:]:
        module = getattr(module, part)
    return getattr(module, name)

if os.environ.get("NAMES"):  # plainly: the same names, as the originals answer
    for path, name in json.loads(os.environ["NAMES"]):
        obj = lookup(path, name)
        print(json.dumps({"where": path, "name": name, "pickles": pickles_back(obj),
                          "signature": signature(obj)}))
    sys.exit()

ROWS = patch_table()
for owner, name, original in ROWS:
    now, was = function(installed(owner, name)), function(original)
    if isinstance(now, type):
        continue  # a class (our queue.SimpleQueue), which pickles by its own name
    print(json.dumps({
        "where": where(owner), "name": name,
        "pickles": pickles_back(getattr(owner, name)),
        "signature": signature(getattr(owner, name)),
        "same_name": now.__name__ == was.__name__,
        "same_doc": now.__doc__ == was.__doc__,
        "wrapped": getattr(now, "__wrapped__", None) is was,
        # pickle looks a function up by __module__ and __qualname__: where it is installed
        "placed": [now.__module__, *now.__qualname__.split(".")] == where(owner) + [name],
        "replaced": now is not was,
    }))
procscope.shutdown()
print(json.dumps({"not_restored": [
    ".".join(where(owner) + [name]) for owner, name, original in ROWS
    if installed(owner, name) is not original]}))
"""


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_every_patched_callable_keeps_the_originals_identity(run_app: Callable[..., Any]) -> None:
    """Walks every name in the instrumentors' patch tables: it pickles and unpickles to the
    installed object as the original did plainly, reports the same signature, name and
    documentation, has the original as __wrapped__, says where it is installed (pickle's
    lookup), and is the original again, by identity, after procscope.shutdown()."""
    traced = run_app(WALK, env={"TRACED": "1"})
    assert traced.returncode == 0, traced.stderr
    rows = _lines(traced.stdout)
    patched = [row for row in rows if "name" in row]
    names = {".".join(row["where"] + [row["name"]]) for row in patched}
    # The table is the instrumentors' own; a few that must be in it.
    assert {"os._exit", "sys.exit", "multiprocessing.process.BaseProcess.start",
            "subprocess.Popen._execute_child", "queue.Queue.put",
            "multiprocessing.queues.Queue.put", "asyncio.queues.Queue.get_nowait"} <= names, names
    plain = run_app(WALK, env={"NAMES": json.dumps([[r["where"], r["name"]] for r in patched])})
    assert plain.returncode == 0, plain.stderr
    as_plain = {(tuple(r["where"]), r["name"]): r for r in _lines(plain.stdout)}
    differences = []
    for row in patched:
        expected = as_plain[(tuple(row["where"]), row["name"])]
        label = ".".join(row["where"] + [row["name"]])
        differences += [(label, key, expected[key], row[key]) for key in ("pickles", "signature")
                        if row[key] != expected[key]]
        differences += [(label, key) for key in ("same_name", "same_doc", "wrapped", "placed",
                                                 "replaced") if row[key] is not True]
    assert differences == []
    (not_restored,) = [row["not_restored"] for row in rows if "not_restored" in row]
    assert not_restored == []


def _plain_and_traced(run_app: Callable[..., Any], code: str, **kwargs: Any) -> tuple[Any, Any]:
    plain = run_app(code, **kwargs)
    traced = run_app(code, env={"TRACED": "1", **kwargs.pop("env", {})}, **kwargs)
    return plain, traced


EXIT_TARGETS = SETUP + """
import multiprocessing, sys
if __name__ == "__main__":
    for method in ("spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        for target, code in ((os._exit, 3), (sys.exit, 5)):
            p = ctx.Process(target=target, args=(code,))
            p.start()
            p.join()
            print(method, target.__name__, p.exitcode)
"""


def test_os_exit_and_sys_exit_are_spawn_and_forkserver_targets(run_app: Callable[..., Any]) -> None:
    """ctx.Process(target=os._exit, args=(3,)) and target=sys.exit, with spawn and
    forkserver: each child exits with its code, as plainly (the patched functions failed to
    pickle: "Can't pickle local object '_make_exit.<locals>._exit'")."""
    plain, traced = _plain_and_traced(run_app, EXIT_TARGETS)
    expected = "spawn _exit 3\nspawn exit 5\nforkserver _exit 3\nforkserver exit 5\n"
    assert (plain.stdout, plain.returncode) == (expected, 0), plain.stderr
    assert (traced.stdout, traced.stderr, traced.returncode) == (expected, "", 0)


SUBMIT_SELF = SETUP + """
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
import multiprocessing

def echo(*args, **kwargs):
    return [list(args), kwargs]

if __name__ == "__main__":
    with ThreadPoolExecutor(1) as pool:
        print(pool.submit(echo, 1, self=2, fn=3).result())
    for method in ("fork", "spawn"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
            print(pool.submit(echo, 1, self=2, fn=3).result())
"""


@pytest.mark.parametrize("spans", ["errors", "all"])
def test_submit_passes_a_keyword_named_self(run_app: Callable[..., Any], spans: str) -> None:
    """executor.submit(fn, 1, self=2, fn=3) calls fn(1, self=2, fn=3) in a thread pool and
    in fork and spawn process pools, as plainly (CPython's test_submit_keyword; procscope's
    wrapped call took self by keyword: "got multiple values for argument 'self'")."""
    env = {"PROCSCOPE_LIFECYCLE_SPANS": spans}
    plain, traced = _plain_and_traced(run_app, SUBMIT_SELF, env=env)
    expected = "[[1], {'self': 2, 'fn': 3}]\n" * 3
    assert (plain.stdout, plain.returncode) == (expected, 0), plain.stderr
    assert (traced.stdout, traced.stderr, traced.returncode) == (expected, "", 0)


ENCODING_WARNING = SETUP + """
from subprocess import *
run("echo hello", shell=True, text=True, stdout=DEVNULL)
check_output("echo hello", shell=True, text=True)
Popen("true", shell=True, text=True, stdout=PIPE).communicate()
import inspect; print(list(inspect.signature(Popen.__init__).parameters))
"""


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="subprocess warns of the default text encoding from Python 3.11")
def test_popen_encoding_warning_names_the_programs_lines(run_app: Callable[..., Any]) -> None:
    """python -X warn_default_encoding: each text-mode run, check_output and Popen warns
    once, at the program's own line, exactly as plainly (CPython's test_encoding_warning;
    procscope's Popen.__init__ wrapper was named instead, and the second warning lost), and
    Popen.__init__ keeps its own signature."""
    prefix = [sys.executable, "-X", "warn_default_encoding"]
    plain, traced = _plain_and_traced(run_app, ENCODING_WARNING, prefix=prefix)
    warned = [line.split(": ")[0].rsplit(":", 1)[1] for line in plain.stderr.splitlines()
              if "EncodingWarning" in line]
    assert warned == ["4", "5", "6"], plain.stderr
    assert "'pass_fds'" in plain.stdout
    assert (traced.stdout, traced.stderr, traced.returncode) == (plain.stdout, plain.stderr, 0)


FEEDER_ERROR = SETUP + """
import multiprocessing, multiprocessing.queues, threading
from concurrent.futures import ProcessPoolExecutor

class Queue(multiprocessing.queues.Queue):
    def _on_queue_feeder_error(self, e, obj):
        print("hook:", type(e).__name__, obj is LOCK, flush=True)

LOCK = threading.Lock()

def identity(x):
    return x

if __name__ == "__main__":
    q = Queue(ctx=multiprocessing.get_context())
    q.put(LOCK)
    q.put("next")
    print(q.get())
    plain_queue = multiprocessing.Queue()
    plain_queue.put(LOCK)
    plain_queue.put("after")
    print(plain_queue.get(), flush=True)
    with ProcessPoolExecutor(1) as pool:
        try:
            pool.submit(identity, LOCK).result()
        except TypeError as exc:
            print("future:", exc)
"""


def test_a_queue_feeder_error_hook_gets_the_programs_object(run_app: Callable[..., Any]) -> None:
    """An unpicklable object put on a multiprocessing Queue: a subclass's
    _on_queue_feeder_error gets the very object put (not procscope's Carried), the default
    hook prints the same traceback, and ProcessPoolExecutor fails the call's future, all as
    plainly (CPython's test_queue_feeder_on_queue_feeder_error)."""
    plain, traced = _plain_and_traced(run_app, FEEDER_ERROR)
    assert plain.stdout.startswith("hook: TypeError True\nnext\nafter\nfuture:"), plain.stdout
    assert "TypeError: cannot pickle '_thread.lock' object" in plain.stderr
    assert (traced.stdout, traced.stderr, traced.returncode) == (
        plain.stdout, plain.stderr, plain.returncode)


FORK_WARNING = SETUP + """
import multiprocessing, threading
if __name__ == "__main__":
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    child = multiprocessing.get_context("fork").Process(target=int)
    child.start()
    child.join()
    release.set()
    thread.join()
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="os.fork warns about threads from 3.12")
@pytest.mark.parametrize("flags", [[], ["-W", "always"]])
def test_fork_warning_names_the_callers_line(run_app: Callable[..., Any], flags: list[str]) -> None:
    """os.fork() in a multi-threaded program, from __main__ and from multiprocessing: its
    DeprecationWarning names the same file and line as plainly, and is shown or hidden by
    the same filters (it named procscope's fork wrapper, and was hidden from __main__)."""
    prefix = [sys.executable, *flags]
    plain, traced = _plain_and_traced(run_app, FORK_WARNING, prefix=prefix)
    assert "app.py:8: DeprecationWarning" in plain.stderr, plain.stderr

    def without_pids(text: str) -> str:
        return re.sub(r"pid=\d+", "pid=N", text)

    assert (without_pids(traced.stderr), traced.returncode) == (without_pids(plain.stderr), 0)


TRACED_CLASS = SETUP + """
import inspect, json, pickle

def traced(cls):
    return procscope.trace_state(cls) if os.environ.get("TRACED") else cls

@traced
class Account:
    def __init__(self, owner: str, balance: int = 0) -> None:
        self.owner = owner
        self.balance = balance

    def deposit(self, amount: int) -> None:
        self.balance += amount

def pickles_back(obj):
    try:
        return pickle.loads(pickle.dumps(obj)) is obj
    except Exception as exc:
        return type(exc).__name__

for name in ("__init__", "deposit", "__setattr__", "__delattr__"):
    method = getattr(Account, name)
    # (not __qualname__: an inherited object.__setattr__ says "object.__setattr__", ours
    # says where it is installed, "Account.__setattr__", for pickle to find it)
    print(json.dumps([name, str(inspect.signature(method)), method.__name__, method.__doc__,
                      pickles_back(method)]))
print(json.dumps(str(inspect.signature(Account))))
"""


def test_a_traced_classs_methods_and_hooks_look_as_plainly(run_app: Callable[..., Any]) -> None:
    """A class under procscope.trace_state: its __init__, methods, __setattr__ and
    __delattr__ report the plain signatures, names and documentation, and pickle by
    reference to themselves, as plainly (the hooks were '_make_setattr.<locals>...')."""
    plain, traced = _plain_and_traced(run_app, TRACED_CLASS)
    assert plain.returncode == 0, plain.stderr
    assert '["__setattr__", "(self, name, value, /)"' in plain.stdout
    assert (traced.stdout, traced.stderr, traced.returncode) == (plain.stdout, "", 0)
