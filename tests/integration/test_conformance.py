"""The conformance matrix (conformance/matrix.py, `make conformance`) reports what it claims.

Each test runs the real driver on a real suite: CPython's own asyncio queue tests, or a
small test file of ours whose outcome really differs, or really hangs, under procscope.
They run a few seconds each, plain and under `procscope run`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "conformance" / "matrix.py"

DIFFERS_UNDER_PROCSCOPE = '''
import os
import unittest


class Env(unittest.TestCase):
    def test_plain_environment(self):
        self.assertNotIn("PROCSCOPE_DB", os.environ)

    def test_same_everywhere(self):
        self.assertEqual(1 + 1, 2)
'''

HANGS = '''
import threading
import unittest


class Hangs(unittest.TestCase):
    def test_a_before(self):
        pass

    def test_b_waits_forever(self):
        threading.Event().wait()

    def test_c_after(self):
        pass
'''


def run_matrix(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                     dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, str(MATRIX), "--work", str(tmp_path / "work"),
         "--results", str(tmp_path / "results"), *args],
        capture_output=True, text=True, timeout=600, check=False,
    )
    latest = tmp_path / "results" / "latest.json"
    assert latest.exists(), completed.stdout + completed.stderr
    return completed, json.loads(latest.read_text())


def test_real_suite_under_procscope_counts_against_plain(tmp_path: Path) -> None:
    """CPython's asyncio queue tests, copied outside the stdlib so their queues are traced,
    run plain and at the defaults: the same tests, each with its outcome, in the table."""
    completed, result = run_matrix(tmp_path, "--suites", "test_asyncio.test_queues",
                                   "--configs", "plain,defaults", "--where", "copy")
    runs = {r["config"]: r for r in result["runs"]}
    assert set(runs) == {"plain", "defaults"}
    plain, defaults = runs["plain"], runs["defaults"]
    assert len(plain["outcomes"]) > 30
    assert set(defaults["outcomes"]) == set(plain["outcomes"])
    assert plain["counts"]["pass"] == len(plain["outcomes"]) - plain["counts"]["skip"]
    assert plain["db_bytes"] == 0 and defaults["db_bytes"] > 0  # it really was traced
    header = next(line for line in completed.stdout.splitlines() if line.startswith("suite"))
    assert header.split()[:5] == ["suite", "where", "config", "tests", "pass"]
    row = next(line for line in completed.stdout.splitlines()
               if line.split()[:3] == ["test_asyncio.test_queues", "copy", "defaults"])
    assert row.split()[3:5] == [str(len(plain["outcomes"])), str(defaults["counts"]["pass"])]
    expected_differences = [
        t for t, o in defaults["outcomes"].items() if o != plain["outcomes"][t]
    ]
    assert sorted(d["test"] for d in result["differences"]) == sorted(expected_differences)


def test_check_fails_on_a_new_difference_and_accepts_a_listed_one(tmp_path: Path) -> None:
    """A test that passes plain and fails under procscope makes --check exit 1 and is named;
    listed with a reason in the known differences, it is accepted."""
    suite = tmp_path / "test_env_seen.py"
    suite.write_text(DIFFERS_UNDER_PROCSCOPE)
    args = ("--add-suite", str(suite), "--configs", "plain,defaults", "--check")
    completed, result = run_matrix(tmp_path, *args)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert [(d["test"], d["plain"], d["outcome"]) for d in result["unknown_differences"]] == [
        ("Env.test_plain_environment", "pass", "fail")
    ]
    assert "[NEW] test_env_seen [copy] defaults: Env.test_plain_environment: pass -> fail" \
        in completed.stdout

    known = tmp_path / "known.json"
    known.write_text(json.dumps({"differences": [{
        "suite": "test_env_seen", "test": "Env.test_plain_environment",
        "config": ["defaults"], "reason": "procscope run sets PROCSCOPE_DB for children",
    }]}))
    completed, result = run_matrix(tmp_path, *args, "--known", str(known))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert result["unknown_differences"] == []
    assert "[known] test_env_seen [copy] defaults: Env.test_plain_environment" in completed.stdout


def test_a_hang_is_reported_by_test_id_and_the_rest_still_runs(tmp_path: Path) -> None:
    """A test that never returns is a 'hang' under its own id; the tests after it run in a
    new process and keep their outcomes."""
    suite = tmp_path / "test_hangs.py"
    suite.write_text(HANGS)
    _, result = run_matrix(tmp_path, "--add-suite", str(suite), "--configs", "plain",
                           "--test-timeout", "2")
    (run,) = result["runs"]
    assert run["outcomes"] == {
        "Hangs.test_a_before": "pass",
        "Hangs.test_b_waits_forever": "hang",
        "Hangs.test_c_after": "pass",
    }
    assert run["processes"] == 2
    assert "test_b_waits_forever" in run["details"]["Hangs.test_b_waits_forever"]
