"""``make conformance``: CPython's regression suites, plain and under ``procscope run``.

    python conformance/matrix.py                      # the whole matrix
    python conformance/matrix.py --profile ci --check # the .ci/run subset; exit 1 on an
                                                      # unknown difference against plain
    python conformance/matrix.py --suites test_queue --configs plain,defaults --where copy

Each (suite, where, configuration) runs in its own process group through
``conformance/_runner.py``; the procscope configurations compare test by test against the
plain run of the same suite from the same place, in the same invocation. A test that hangs
is reported as ``hang`` with its id, and the rest of the suite runs on in a new process.
A test that fails or errors where it passes plain is run once more, alone, under the
configuration, and the difference says whether it then passes ("passes alone"): a test
that fails only after others ran is as much a difference as one that always fails (state
left behind by procscope, such as an fd, is often the cause), so it stays one.

The table goes to stdout; ``conformance/results/latest.json`` and ``latest.md`` keep it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _execute import RunResult, run_from_json, run_suite  # noqa: E402
from _report import (  # noqa: E402
    differences,
    load_known,
    markdown,
    table_text,
    unknown_differences,
)
from suites import CI_SUITES, SUITES, Suite, prepare  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"procscope": False},
    "defaults": {"procscope": True, "args": [], "env": {}},
    "max": {
        "procscope": True,
        "args": [],
        "env": {"PROCSCOPE_SAMPLING": "tail", "PROCSCOPE_LIFECYCLE_SPANS": "all"},
    },
    "rate-0.01": {"procscope": True, "args": ["--sample-rate", "0.01"], "env": {}},
}
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"suites": list(SUITES), "configs": list(CONFIGS), "where": ["stdlib", "copy"],
             "test_timeout": 240.0},
    # A hang costs its timeout: 45 s is over ten times the slowest test of these suites
    # here, and keeps the subset within 5 minutes with a hang or two.
    # rate-0.01 too: below rate 1 the flight recorder is on, and an unsampled
    # multiprocessing message carries its sender's stamp (docs/flight-recorder.md).
    "ci": {"suites": list(CI_SUITES), "configs": ["plain", "defaults", "max", "rate-0.01"],
           "where": ["copy"], "test_timeout": 45.0},
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--suites", help="comma-separated suite names (default: the profile's)")
    parser.add_argument("--add-suite", action="append", default=[], metavar="FILE.py",
                        help="also run a test file of one's own (from outside the stdlib)")
    parser.add_argument("--select", action="append", default=[], metavar="PATTERN",
                        help="run only the tests whose id matches (fnmatch; several OR'ed)")
    parser.add_argument("--configs", help="comma-separated, of " + ", ".join(CONFIGS))
    parser.add_argument("--where", help="stdlib, copy or both (comma-separated)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--test-timeout", type=float,
                        help="seconds one test (or fixture) may take before it is a hang "
                        "(default: 240, or 45 in the ci profile)")
    parser.add_argument("--suite-timeout", type=float, default=1800.0)
    parser.add_argument("--work", default=os.path.join(HERE, ".work"))
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--known", default=os.path.join(HERE, "known_differences.json"))
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a difference against plain is not a known one")
    parser.add_argument("--markdown", action="store_true",
                        help="with --report: print the markdown table")
    parser.add_argument("--report", metavar="RESULTS.json",
                        help="print the table of a past run again (judged against the "
                        "known differences of now) instead of running anything")
    parser.add_argument("--no-recheck", action="store_true",
                        help="do not rerun differing tests alone")
    args = parser.parse_args(argv)
    # The runs start in folders of their own: every path given must not depend on ours.
    for name in ("work", "results", "known"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    args.add_suite = [os.path.abspath(p) for p in args.add_suite]
    return args


def _plan(args: argparse.Namespace) -> tuple[list[Suite], list[str], list[str]]:
    profile = PROFILES[args.profile]
    names = args.suites.split(",") if args.suites else profile["suites"]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SystemExit(f"conformance: unknown suite(s) {unknown}; known: {list(SUITES)}")
    suites = []
    for name in names:
        suite = SUITES[name]
        if args.profile == "ci" and CI_SUITES.get(name):
            suite = dataclasses.replace(suite, select=CI_SUITES[name])
        suites.append(suite)
    if args.add_suite and not args.suites:
        suites = []
    for path in args.add_suite:
        name = os.path.splitext(os.path.basename(path))[0]
        suites.append(Suite(name, name, outside_stdlib_only=True,
                            source=os.path.abspath(path)))
    if args.select:
        suites = [dataclasses.replace(s, select=args.select) for s in suites]
    configs = args.configs.split(",") if args.configs else profile["configs"]
    if "plain" not in configs:
        configs.insert(0, "plain")  # the baseline is always measured, never assumed
    where = args.where.split(",") if args.where else profile["where"]
    return suites, configs, where


def _report_again(path: str, known_path: str, markdown_out: bool) -> int:
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    results = []
    for data in document["runs"]:
        suite = SUITES.get(data["suite"]) or Suite(data["suite"], data["module"],
                                                   outside_stdlib_only=True)
        results.append(run_from_json(data, suite))
    diffs = document["differences"]
    for diff in diffs:
        if diff["kind"] == "flaky":  # the judgement of an older matrix.py
            diff["kind"], diff["passes_alone"] = "regression", True
        diff.pop("known", None)
    unknown = unknown_differences(diffs, load_known(known_path))
    meta = document["meta"]
    meta.setdefault("tree", "unknown")
    print(markdown(results, diffs, unknown, meta) if markdown_out
          else table_text(results, diffs, unknown, meta))
    return 1 if unknown else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.report:
        return _report_again(args.report, args.known, markdown_out=args.markdown)
    suites, configs, places = _plan(args)
    if args.test_timeout is None:
        args.test_timeout = PROFILES[args.profile]["test_timeout"]
    started = datetime.datetime.now(datetime.timezone.utc)
    copies = os.path.join(args.work, "copies")
    runs_dir = os.path.join(args.work, "runs")
    shutil.rmtree(runs_dir, ignore_errors=True)
    jobs: list[tuple[Suite, str, str, str]] = []
    for suite in suites:
        for where in places:
            if where == "stdlib" and suite.outside_stdlib_only and "copy" in places:
                continue  # the same file from the same place: run once, as "copy"
            folder = prepare(suite, where, copies)
            if folder is None:
                print(f"conformance: {suite.name} is a package here, which runs only from "
                      "the stdlib: no copy row", file=sys.stderr)
                continue
            jobs.extend((suite, where, config, folder) for config in configs)

    plain_runs: dict[tuple[str, str], RunResult] = {}

    def one(job: tuple[Suite, str, str, str]) -> RunResult:
        suite, where, config, folder = job
        result = run_suite(suite, where, config, CONFIGS[config], folder, runs_dir,
                           args.test_timeout, args.suite_timeout)
        print(f"conformance: {result.summary_line()}", file=sys.stderr, flush=True)
        # Differences as they come (the table waits for the end of the whole matrix).
        if config == "plain":
            plain_runs[(suite.name, where)] = result
        elif (suite.name, where) in plain_runs:
            for diff in differences([plain_runs[(suite.name, where)], result]):
                print(f"conformance:   {diff['test']}: {diff['plain']} -> {diff['outcome']}",
                      file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, jobs))

    diffs = differences(results)
    if not args.no_recheck and diffs:
        _recheck(diffs, results, args, runs_dir)
    known = load_known(args.known)
    unknown = unknown_differences(diffs, known)
    finished = datetime.datetime.now(datetime.timezone.utc)
    meta = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "profile": args.profile,
        "tree": _tree_version(),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "configs": {c: CONFIGS[c] for c in configs},
    }
    print(table_text(results, diffs, unknown, meta))
    os.makedirs(args.results, exist_ok=True)
    document = {
        "meta": meta,
        "runs": [r.to_json() for r in results],
        "differences": diffs,
        "unknown_differences": unknown,
    }
    with open(os.path.join(args.results, "latest.json"), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
    with open(os.path.join(args.results, "latest.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results, diffs, unknown, meta))
    if args.check and unknown:
        print(f"conformance: {len(unknown)} difference(s) against plain that "
              f"{os.path.relpath(args.known)} does not list", file=sys.stderr)
        return 1
    return 0


def _tree_version() -> str:
    """The commit the procscope under test was at, "-dirty" with uncommitted changes."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _recheck(diffs: list[dict[str, Any]], results: list[RunResult],
             args: argparse.Namespace, runs_dir: str) -> None:
    """Run each differing test once more, alone, under its configuration.

    Only failures and errors: a hang or crash that happens one time in two is a defect,
    and a skip is the test's own decision."""
    by_run = {(r.suite.name, r.where, r.config): r for r in results}
    for diff in diffs:
        if diff["kind"] != "regression" or diff["outcome"] not in ("fail", "error"):
            continue
        run = by_run[(diff["suite"], diff["where"], diff["config"])]
        again = run_suite(run.suite, run.where, run.config, CONFIGS[run.config],
                          run.folder, os.path.join(runs_dir, "recheck"), args.test_timeout,
                          args.suite_timeout, only=[run.raw_id(diff["test"])])
        outcome = again.outcomes.get(diff["test"], "not run")
        diff["recheck"] = outcome
        diff["passes_alone"] = outcome == diff["plain"]


if __name__ == "__main__":
    sys.exit(main())
