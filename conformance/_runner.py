"""Run one CPython regression test module and write each test's outcome as a JSON line.

This is the process that ``procscope run`` instruments (or not, for the plain baseline):

    python conformance/_runner.py --module test.test_queue --out RESULTS.jsonl

It runs the module with :mod:`unittest` (honouring its ``load_tests``), not with regrtest,
so that every outcome comes from the test result object and none from parsing text.

The lines, appended with ``os.write`` on an unbuffered descriptor (a forked child that
inherits it writes nothing, since only this process's id may write):

- ``{"collected": [ids]}`` once, before anything runs;
- ``{"start": id}`` before each test and ``{"stop": id}`` after it;
- ``{"id": id, "outcome": ..., "detail": ...}`` for each outcome.

A watchdog (``faulthandler.dump_traceback_later`` with ``exit=True``) is re-armed at each
start and stop: a test, or a class or module fixture between two tests, that takes longer
than ``--test-timeout`` has its stack dumped to stderr and the process exits. The driver
(``conformance/matrix.py``) sees which test started last and runs the rest in a new
process, given in ``--skip``.
"""

from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import sys
import traceback
import unittest
from collections.abc import Iterator
from typing import Any

DETAIL_LIMIT = 600


class _Journal:
    """Append-only JSON lines, written only by the process that opened the file."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pid = os.getpid()

    def write(self, record: dict[str, Any]) -> None:
        if os.getpid() != self._pid:
            return
        os.write(self._fd, (json.dumps(record) + "\n").encode())


class JournalResult(unittest.TestResult):
    """A result that journals every outcome as it happens and re-arms the watchdog."""

    def __init__(self, journal: _Journal, test_timeout: float) -> None:
        super().__init__()
        self._journal = journal
        self._timeout = test_timeout
        self._failed_subtests: set[str] = set()

    def _arm(self) -> None:
        if self._timeout > 0:
            faulthandler.dump_traceback_later(self._timeout, exit=True)

    def _outcome(self, test: Any, outcome: str, detail: str = "") -> None:
        self._journal.write(
            {"id": _test_id(test), "outcome": outcome, "detail": detail[-DETAIL_LIMIT:]}
        )

    def startTest(self, test: Any) -> None:  # noqa: N802
        self._arm()
        self._journal.write({"start": _test_id(test)})
        super().startTest(test)

    def stopTest(self, test: Any) -> None:  # noqa: N802
        super().stopTest(test)
        test_id = _test_id(test)
        self._journal.write({"stop": test_id})
        # What regrtest calls "environment changed" (a dangling thread or process, a
        # changed signal handler, ...): test.support's helpers set this flag and warn.
        from test import support

        if support.environment_altered:
            self._journal.write({"env_changed": test_id})
            support.environment_altered = False
        self._arm()

    def addSuccess(self, test: Any) -> None:  # noqa: N802
        super().addSuccess(test)
        if _test_id(test) not in self._failed_subtests:
            self._outcome(test, "pass")

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)
        self._outcome(test, "fail", _describe(err))

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addError(test, err)
        self._outcome(test, "error", _describe(err))

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self._outcome(test, "skip", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self._outcome(test, "xfail")

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self._outcome(test, "xpass")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        parent = _test_id(test)
        self._failed_subtests.add(parent)
        failed = issubclass(err[0], test.failureException)
        self._journal.write(
            {
                "id": parent,
                "outcome": "fail" if failed else "error",
                "detail": (str(subtest) + "\n" + _describe(err))[
                    -DETAIL_LIMIT:
                ],
            }
        )


def _describe(err: Any) -> str:
    return "".join(traceback.format_exception(*err))


def _test_id(test: Any) -> str:
    # An error in setUpClass/setUpModule comes as an _ErrorHolder, whose id() is its
    # description ("setUpClass (module.Class)").
    return str(test.id())


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def _prepare_test_support() -> None:
    """What regrtest sets up before running a test module, and nothing more.

    No resource (``-u``) is enabled, as in ``python -m test`` without ``-u``.
    """
    from test import support

    support.use_resources = []
    support.verbose = 0
    support.failfast = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="test module to import")
    parser.add_argument("--path", action="append", default=[], help="prepend to sys.path")
    parser.add_argument("--out", required=True, help="JSON lines file (appended to)")
    parser.add_argument("--select", action="append", default=[],
                        help="fnmatch pattern on test ids; several are OR'ed")
    parser.add_argument("--skip", help="file of test ids not to run, one a line")
    parser.add_argument("--test-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    # A program started from a terminal has SIGINT's default handler; started in the
    # background (nohup, CI) it inherits SIGINT ignored, and the suites' SIGINT tests
    # would fail plain. Python's own handler again, as a terminal would give it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for path in reversed(args.path):
        sys.path.insert(0, os.path.abspath(path))
    journal = _Journal(args.out)
    _prepare_test_support()
    faulthandler.enable()
    try:
        module = importlib.import_module(args.module)
    except unittest.SkipTest as exc:  # the module skips itself (no fork here, ...)
        journal.write({"collected": [args.module]})
        journal.write({"id": args.module, "outcome": "skip", "detail": str(exc)})
        journal.write({"finished": True, "testsRun": 0})
        return 0
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    tests = list(iter_tests(suite))
    if args.select:
        tests = [t for t in tests if any(fnmatch.fnmatchcase(t.id(), p) for p in args.select)]
    skip: set[str] = set()
    if args.skip:
        with open(args.skip, encoding="utf-8") as f:
            skip = {line.strip() for line in f if line.strip()}
    else:
        journal.write({"collected": [t.id() for t in tests]})
    result = JournalResult(journal, args.test_timeout)
    result._arm()
    unittest.TestSuite([t for t in tests if t.id() not in skip]).run(result)
    faulthandler.cancel_dump_traceback_later()
    journal.write({"finished": True, "testsRun": result.testsRun})
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
