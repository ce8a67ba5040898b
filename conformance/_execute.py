"""Run one suite in one configuration, resuming after a hang or crash, and read its journal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from suites import Suite

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "_runner.py")
MAX_ATTEMPTS = 8  # processes per run: the first, then one more after each hang or crash
# Worst first: the outcome kept when a test reports several (a failure, then an error in
# tearDown) is the worst one.
RANK = ["hang", "crash", "error", "fail", "xpass", "not run", "skip", "xfail", "pass"]


def clean_environ() -> dict[str, str]:
    """The caller's environment without procscope's, OpenTelemetry's or PYTHONPATH."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROCSCOPE_", "OTEL_")) and k != "PYTHONPATH"
    }


@dataclass
class RunResult:
    suite: Suite
    where: str
    config: str
    folder: str
    module: str
    collected: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # short id -> outcome
    details: dict[str, str] = field(default_factory=dict)
    processes: int = 0
    seconds: float = 0.0
    note: str = ""
    procscope_stderr: list[str] = field(default_factory=list)
    db_bytes: int = 0
    env_changed: list[str] = field(default_factory=list)  # short ids

    def short(self, test_id: str) -> str:
        """A test id without its module, the same from the stdlib and from a copy."""
        return test_id.replace(self.module + ".", "")

    def raw_id(self, short_id: str) -> str:
        return short_id if "(" in short_id else f"{self.module}.{short_id}"

    def counts(self) -> dict[str, int]:
        counts = {name: 0 for name in RANK}
        for outcome in self.outcomes.values():
            counts[outcome] += 1
        return counts

    def summary_line(self) -> str:
        c = self.counts()
        return (f"{self.suite.name} [{self.where}] {self.config}: {len(self.outcomes)} tests, "
                f"{c['pass']} passed, {c['fail']} failed, {c['error']} errors, "
                f"{c['skip']} skipped, {c['hang']} hung, {c['crash']} crashed, "
                f"{c['not run']} not run ({self.seconds:.0f} s) {self.note}").rstrip()

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite.name, "where": self.where, "config": self.config,
            "module": self.module, "counts": self.counts(), "outcomes": self.outcomes,
            "details": self.details, "processes": self.processes,
            "seconds": round(self.seconds, 1), "note": self.note,
            "procscope_stderr": self.procscope_stderr, "db_bytes": self.db_bytes,
            "env_changed": self.env_changed,
        }


def run_from_json(data: dict[str, Any], suite: Suite) -> RunResult:
    """A run as ``to_json`` kept it (matrix.py --report)."""
    run = RunResult(suite, data["where"], data["config"], "", data["module"])
    run.outcomes, run.details = data["outcomes"], data["details"]
    run.processes, run.seconds, run.note = data["processes"], data["seconds"], data["note"]
    run.procscope_stderr, run.db_bytes = data["procscope_stderr"], data["db_bytes"]
    run.env_changed = data.get("env_changed", [])
    return run


def _command(config: dict[str, Any], db: str, runner_args: list[str]) -> list[str]:
    python = sys.executable
    if not config["procscope"]:
        return [python, RUNNER, *runner_args]
    procscope = os.path.join(os.path.dirname(python), "procscope")
    return [procscope, "run", *config["args"], "--db", db, "--", python, RUNNER, *runner_args]


def _read_journal(path: str) -> list[dict[str, Any]]:
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a killed process
    except FileNotFoundError:
        pass
    return records


def _kill_group(pgid: int) -> None:
    """Kill what is left of a run: its process group (children a test left hanging)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_suite(suite: Suite, where: str, config_name: str, config: dict[str, Any],
              folder: str, runs_dir: str, test_timeout: float, suite_timeout: float,
              only: list[str] | None = None) -> RunResult:
    """Run ``suite`` (or the tests ``only``) until every collected test has an outcome."""
    module = suite.module_for(where)
    result = RunResult(suite, where, config_name, folder, module)
    run_dir = os.path.join(runs_dir, f"{suite.name}.{where}.{config_name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = os.path.join(run_dir, "cwd")
    os.makedirs(cwd)
    journal = os.path.join(run_dir, "journal.jsonl")
    skip_file = os.path.join(run_dir, "skip.txt")
    stderr_path = os.path.join(run_dir, "stderr.txt")
    db = os.path.join(run_dir, "procscope.db")
    env = clean_environ()
    env.update(config.get("env", {}))
    select = only if only else suite.select
    base_args = ["--module", module, "--path", folder, "--out", journal,
                 "--test-timeout", str(test_timeout)]
    for pattern in select:
        base_args += ["--select", pattern]
    begin = time.monotonic()
    collected: list[str] | None = None
    raw: dict[str, str] = {}
    details: dict[str, str] = {}
    env_changed: set[str] = set()
    for _attempt in range(MAX_ATTEMPTS):
        runner_args = list(base_args)
        if collected is not None:
            with open(skip_file, "w", encoding="utf-8") as f:
                f.write("\n".join(raw) + "\n")
            runner_args += ["--skip", skip_file]
        start_of_attempt = os.path.getsize(stderr_path) if os.path.exists(stderr_path) else 0
        with open(stderr_path, "ab") as err, open(os.devnull, "wb") as out:
            proc = subprocess.Popen(_command(config, db, runner_args), cwd=cwd, env=env,
                                    stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            result.processes += 1
            remaining = suite_timeout - (time.monotonic() - begin)
            timed_out = False
            try:
                proc.wait(timeout=max(1.0, remaining))
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        records = _read_journal(journal)
        finished = False
        last_started: str | None = None
        last_stopped: str | None = None
        for record in records:
            if "collected" in record and collected is None:
                collected = record["collected"]
            elif "start" in record:
                last_started, last_stopped = record["start"], None
            elif "stop" in record:
                last_stopped = record["stop"]
            elif "env_changed" in record:
                env_changed.add(record["env_changed"])
            elif "outcome" in record:
                _keep_worst(raw, details, record["id"], record["outcome"], record["detail"])
            elif record.get("finished"):
                finished = True
        with open(stderr_path, "rb") as f:
            f.seek(start_of_attempt)
            stderr_tail = f.read().decode("utf-8", "replace")
        if finished:
            break
        if collected is None:
            result.note = f"did not start (exit {proc.returncode}): " + stderr_tail[-300:]
            break
        hung = timed_out or "Timeout (" in stderr_tail
        outcome = "hang" if hung else "crash"
        stuck = last_started if last_stopped is None else f"(after {last_stopped})"
        # faulthandler's dump starts at "Timeout (", most recent call first: the test's
        # own frames are near its top.
        dump = stderr_tail[stderr_tail.index("Timeout ("):][:1500] if hung and \
            "Timeout (" in stderr_tail else stderr_tail[-800:]
        _keep_worst(raw, details, stuck or "(before the first test)", outcome,
                    f"exit {proc.returncode}; {dump}")
        if stuck is None:
            break  # no test to skip past: another process would do the same
        if timed_out:
            result.note = f"suite timeout ({suite_timeout:.0f} s)"
            break
        _truncate_journal(journal, records)
    for test_id in collected or []:
        raw.setdefault(test_id, "not run")
    result.collected = [result.short(t) for t in collected or []]
    result.outcomes = {result.short(t): o for t, o in raw.items()}
    result.details = {result.short(t): d for t, d in details.items() if d}
    result.env_changed = sorted(result.short(t) for t in env_changed)
    result.seconds = time.monotonic() - begin
    result.procscope_stderr = _procscope_lines(stderr_path)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            result.db_bytes += os.path.getsize(db + suffix)
    shutil.rmtree(cwd, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)  # up to hundreds of MB at spans=all; its size is kept
    return result


def _keep_worst(raw: dict[str, str], details: dict[str, str], test_id: str, outcome: str,
                detail: str) -> None:
    old = raw.get(test_id)
    if old is None or RANK.index(outcome) < RANK.index(old):
        raw[test_id] = outcome
        details[test_id] = detail


def _truncate_journal(journal: str, records: list[dict[str, Any]]) -> None:
    """Keep the journal's outcomes only: the next process starts from a clean slate."""
    with open(journal, "w", encoding="utf-8") as f:
        for record in records:
            if "collected" in record or "outcome" in record or "env_changed" in record:
                f.write(json.dumps(record) + "\n")


def _procscope_lines(stderr_path: str, limit: int = 20) -> list[str]:
    """Lines of the run's stderr that procscope wrote (internal errors, warnings)."""
    lines: list[str] = []
    try:
        with open(stderr_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "procscope" in line.lower() and line.strip() not in lines:
                    lines.append(line.strip())
                    if len(lines) >= limit:
                        break
    except FileNotFoundError:
        pass
    return lines
