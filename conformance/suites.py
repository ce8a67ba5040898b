"""The CPython regression suites of the conformance matrix, and where each one runs from.

A suite runs from one of two places:

- ``stdlib``: the test module as the interpreter ships it. procscope treats queues made
  by files inside the standard library as plumbing and does not trace them, so here
  the patches are exercised but most of the tests' own queues are not traced.
- ``copy``: copies of the test files in a folder outside the standard library
  (``conformance/.work/copies/<suite>/``), importing ``test.support`` and the rest of
  the ``test`` package normally. Their queues, processes and threads are then user
  code to procscope, and are traced.

The test files come from the interpreter that runs them (``sys.executable``'s own
``test`` package), except where that package lacks a module (some builds strip
``test_concurrent_futures`` and ``test_multiprocessing_*``): the multiprocessing
wrappers are generated here (they are three lines over ``test._test_multiprocessing``,
which the package keeps), and ``test_concurrent_futures`` is taken from the nearest
older Python on the machine that has it (:func:`concurrent_futures_source`), run from
outside the standard library in both places.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field

TEST_DIR = os.path.join(sysconfig.get_paths()["stdlib"], "test")

MP_SUBSET = [
    "*.WithProcessesTestProcess.*",
    "*.WithProcessesTestSubclassingProcess.*",
    "*.WithProcessesTestQueue.*",
    "*.WithManagerTestQueue.*",
    "*.WithProcessesTestConnection.*",
    "*.WithProcessesTestEvent.*",
    "*.WithProcessesTestPool.test_apply*",
    "*.WithProcessesTestPool.test_map*",
    "*.WithProcessesTestPool.test_context",
    "*.WithProcessesTestPool.test_terminate",
    "*.TestSimpleQueue.*",
    "*.TestForkAwareThreadLock.*",
    "*.TestCloseFds.*",
    "*.TestInitializers.*",
    "*.TestSyncManagerTypes.test_queue",
    "*.TestSyncManagerTypes.test_list",
    "*.TestSyncManagerTypes.test_dict",
]


@dataclass(frozen=True)
class Suite:
    """One regression suite: a test module, optionally a subset of its tests."""

    name: str
    module: str  # as imported when run from the stdlib
    select: list[str] = field(default_factory=list)  # fnmatch patterns on test ids
    mp_start_method: str | None = None  # a test_multiprocessing_<method> wrapper
    outside_stdlib_only: bool = False  # its file is not in this Python's stdlib
    source: str | None = None  # a test file of one's own (matrix.py --add-suite)

    def module_for(self, where: str) -> str:
        """The module name the runner imports."""
        if self.mp_start_method:
            return self.name
        if where == "copy" or self.outside_stdlib_only:
            return self.module.rsplit(".", 1)[-1]
        return self.module


def _mp(method: str) -> Suite:
    return Suite(f"test_multiprocessing_{method}", "test._test_multiprocessing",
                 select=MP_SUBSET, mp_start_method=method)


SUITES: dict[str, Suite] = {
    s.name: s
    for s in [
        Suite("test_queue", "test.test_queue"),
        Suite("test_thread", "test.test_thread"),
        Suite("test_threading", "test.test_threading"),
        Suite("test_asyncio.test_queues", "test.test_asyncio.test_queues"),
        Suite("test_asyncio.test_tasks", "test.test_asyncio.test_tasks"),
        Suite("test_asyncio.test_subprocess", "test.test_asyncio.test_subprocess"),
        Suite("test_subprocess", "test.test_subprocess"),
        Suite("test_signal", "test.test_signal"),
        Suite("test_os", "test.test_os"),
        Suite("test_pickle", "test.test_pickle"),
        # A package from 3.12 on; some builds of older versions strip the module.
        Suite("test_concurrent_futures", "test.test_concurrent_futures",
              outside_stdlib_only=not os.path.exists(
                  os.path.join(TEST_DIR, "test_concurrent_futures"))),
        _mp("fork"),
        _mp("spawn"),
        _mp("forkserver"),
    ]
}

# The subset .ci/run runs (conformance/matrix.py --profile ci): the suites closest to
# what procscope patches, small enough to finish in minutes on two cores.
CI_SUITES = {
    "test_queue": [],
    "test_thread": [],
    "test_threading": ["*.ThreadTests.*", "*.ThreadJoinOnShutdown.*",
                       "*.SubinterpThreadingTests.*"],
    "test_asyncio.test_queues": [],
    "test_subprocess": ["*.POSIXProcessTestCase.test_pass_fds*", "*.test_encoding_warning",
                        "*.POSIXProcessTestCase.test_preexec*", "*.test_invalid_args",
                        "*.POSIXProcessTestCase.test_swap_fds", "*.test_env"],
    "test_os": ["*closerange*", "*putenv*", "*.EnvironTests.*"],
    "test_concurrent_futures": ["*ThreadPool*", "*ProcessPoolForkExecutorTest.*",
                                "*ProcessPoolSpawnExecutorTest.*"],
    "test_multiprocessing_fork": ["*.WithProcessesTestProcess.*", "*.WithProcessesTestQueue.*",
                                  "*.WithManagerTestQueue.*", "*.TestSimpleQueue.*"],
    "test_multiprocessing_spawn": ["*.WithProcessesTestSubclassingProcess.test_sys_exit",
                                   "*.WithProcessesTestQueue.test_put",
                                   "*.WithProcessesTestQueue.test_get"],
}


def concurrent_futures_source() -> str | None:
    """This Python's test_concurrent_futures.py, else the newest older one on the machine
    (a single-file module; from 3.12 it is a package that needs the newer test.support)."""
    own = os.path.join(TEST_DIR, "test_concurrent_futures.py")
    if os.path.exists(own):
        return own
    here = sys.version_info[:2]
    found = []
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(TEST_DIR)))  # .../versions
    versions_dir = os.path.dirname(prefix)
    for path in glob.glob(os.path.join(versions_dir, "*", "lib", "python3.*", "test",
                                       "test_concurrent_futures.py")):
        minor = int(path.split("python3.")[1].split(os.sep)[0])
        if minor < here[1]:
            found.append((minor, path))
    return max(found)[1] if found else None


def _mp_wrapper(method: str, base_module: str) -> str:
    return (
        "# Generated by conformance/suites.py: the regression suite's wrapper module.\n"
        f"import {base_module}\n"
        f"{base_module}.install_tests_in_module_dict(globals(), {method!r})\n"
    )


def prepare(suite: Suite, where: str, root: str) -> str | None:
    """Make the folder the runner puts first on ``sys.path``; returns its path, or None
    when the suite cannot run from there."""
    folder = os.path.join(root, where, suite.name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    if suite.mp_start_method:
        base = "test._test_multiprocessing"
        if where == "copy":
            shutil.copy(os.path.join(TEST_DIR, "_test_multiprocessing.py"),
                        os.path.join(folder, "_test_multiprocessing_copy.py"))
            base = "_test_multiprocessing_copy"
        with open(os.path.join(folder, suite.name + ".py"), "w", encoding="utf-8") as f:
            f.write(_mp_wrapper(suite.mp_start_method, base))
        return folder
    source: str | None
    if suite.source:
        source = suite.source
    elif suite.outside_stdlib_only:
        source = concurrent_futures_source()
        if source is None:
            raise FileNotFoundError(f"no {suite.module} on this machine")
    elif where == "copy":
        source = os.path.join(TEST_DIR, *suite.module.split(".")[1:])
        if os.path.isdir(source):
            # A package (test_concurrent_futures from 3.13): its load_tests discovers its
            # modules from the stdlib folder only (test.support.load_package_tests), so
            # a copy elsewhere finds no test.
            return None
        source += ".py"
    else:
        return folder
    shutil.copy(source, os.path.join(folder, suite.module_for(where) + ".py"))
    return folder
