"""Compare each configuration with plain, test by test, and print the table."""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any

from _execute import RANK, RunResult

COLUMNS = ["pass", "fail", "error", "skip", "hang", "crash", "not run"]


def _worse(outcome: str, than: str) -> bool:
    return RANK.index(outcome) < RANK.index(than)


def differences(results: list[RunResult]) -> list[dict[str, Any]]:
    """Every test whose outcome under a procscope configuration is not its plain outcome.

    ``kind`` is ``regression`` when it is worse than plain (a test that passes plain but
    fails, errors, is skipped, hangs, crashes or does not run; a fixture error that plain
    does not have), else ``changed`` (better or merely different, e.g. fails another way).
    """
    plain = {(r.suite.name, r.where): r for r in results if r.config == "plain"}
    diffs: list[dict[str, Any]] = []
    for run in results:
        if run.config == "plain":
            continue
        base = plain.get((run.suite.name, run.where))
        if base is None or base.note.startswith("did not start"):
            continue
        where = {"suite": run.suite.name, "where": run.where, "config": run.config}
        if run.note.startswith("did not start"):
            diffs.append({**where, "test": "(whole suite)", "plain": "ran",
                          "outcome": "did not start", "kind": "regression",
                          "detail": run.note})
            continue
        for test in sorted(set(base.outcomes) | set(run.outcomes)):
            before = base.outcomes.get(test, "pass")  # a fixture error plain does not have
            after = run.outcomes.get(test, "pass")
            if before == after:
                continue
            diffs.append({
                **where, "test": test, "plain": before, "outcome": after,
                "kind": "regression" if _worse(after, before) else "changed",
                "detail": run.details.get(test, ""),
            })
        # regrtest's "environment changed" (test.support saw a dangling thread or process,
        # a changed signal handler...): shown, not a failure of --check.
        for test in sorted(set(run.env_changed) - set(base.env_changed)):
            diffs.append({**where, "test": test, "plain": "unchanged",
                          "outcome": "env changed", "kind": "env changed", "detail": ""})
    return diffs


def load_known(path: str) -> list[dict[str, Any]]:
    """Known, documented differences: each names a suite, a test pattern and a reason."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)["differences"]
    for entry in entries:
        missing = {"suite", "test", "reason"} - set(entry)
        if missing or not entry["reason"].strip():
            raise ValueError(f"{path}: entry {entry} needs suite, test and a reason")
    return list(entries)


def _listed(diff: dict[str, Any], entry: dict[str, Any]) -> bool:
    def matches(key: str) -> bool:
        allowed = entry.get(key, "*")
        return allowed == "*" or diff[key] in allowed
    return (
        fnmatch.fnmatchcase(diff["suite"], entry["suite"])
        and fnmatch.fnmatchcase(diff["test"], entry["test"])
        and matches("config") and matches("where")
        and entry.get("outcome", "*") in ("*", diff["outcome"])
    )


def unknown_differences(diffs: list[dict[str, Any]],
                        known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regressions that no entry of the known differences lists."""
    unknown = []
    for diff in diffs:
        if diff["kind"] != "regression":
            continue
        reasons = [e["reason"] for e in known if _listed(diff, e)]
        if reasons:
            diff["known"] = reasons[0]
        else:
            unknown.append(diff)
    return unknown


def _rows(results: list[RunResult], diffs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for run in results:
        counts = run.counts()
        mine = [d for d in diffs if (d["suite"], d["where"], d["config"])
                == (run.suite.name, run.where, run.config)]
        regressions = sum(d["kind"] == "regression" for d in mine)
        alone = sum(bool(d.get("passes_alone")) for d in mine)
        env = sum(d["kind"] == "env changed" for d in mine)
        rows.append([
            run.suite.name, run.where, run.config, str(len(run.outcomes)),
            *(str(counts[c]) for c in COLUMNS),
            "-" if run.config == "plain" else str(regressions),
            "-" if run.config == "plain" else str(alone),
            str(len(run.env_changed)) if run.config == "plain" else str(env),
            f"{run.seconds:.0f}",
        ])
    return rows


HEADER = ["suite", "where", "config", "tests", *COLUMNS, "worse than plain", "of which pass alone",
          "env changed", "s"]


def _difference_lines(diffs: list[dict[str, Any]], unknown: list[dict[str, Any]]) -> list[str]:
    lines = []
    for diff in diffs:
        if diff["kind"] in ("changed", "env changed"):
            tag = diff["kind"]
        else:
            tag = "NEW" if diff in unknown else "known"
            if diff.get("passes_alone"):
                tag += ", passes alone"
        lines_of_detail = [ln.strip() for ln in diff["detail"].splitlines() if ln.strip()]
        method = diff["test"].rsplit(".", 1)[-1]
        if diff["outcome"] == "hang":  # the stack dump: where the test itself waits
            first = next((ln for ln in lines_of_detail if method in ln), "")
        else:  # a traceback: its last line, the exception
            first = lines_of_detail[-1] if lines_of_detail else ""
        lines.append(f"[{tag}] {diff['suite']} [{diff['where']}] {diff['config']}: "
                     f"{diff['test']}: {diff['plain']} -> {diff['outcome']}"
                     + (f" ({first[:160]})" if first else ""))
    return lines


def table_text(results: list[RunResult], diffs: list[dict[str, Any]],
               unknown: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    rows = [HEADER, *_rows(results, diffs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    out = [f"Conformance: Python {meta['python']}, profile {meta['profile']}, "
           f"procscope at {meta['tree']}, {meta['started']} to {meta['finished']}", ""]
    for row in rows:
        out.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))))
    out += ["", f"Differences against plain: {len(diffs)} "
            f"({sum(d['kind'] == 'regression' for d in diffs)} worse, "
            f"{len(unknown)} not in known_differences.json)"]
    out += ["  " + line for line in _difference_lines(diffs, unknown)]
    notes = [r for r in results if r.note or r.procscope_stderr]
    for run in notes:
        out.append(f"Note {run.suite.name} [{run.where}] {run.config}: {run.note}".rstrip())
        out += [f"    stderr: {line[:200]}" for line in run.procscope_stderr[:5]]
    return "\n".join(out)


def markdown(results: list[RunResult], diffs: list[dict[str, Any]],
             unknown: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [f"Python {meta['python']}, profile `{meta['profile']}`, procscope at "
           f"`{meta['tree']}`, {meta['started']} to {meta['finished']}.", ""]
    out.append("| " + " | ".join(HEADER) + " |")
    out.append("|" + " --- |" * len(HEADER))
    out += ["| " + " | ".join(row) + " |" for row in _rows(results, diffs)]
    out += ["", "Differences against plain:", ""]
    out += ["- " + line.replace("|", "\\|") for line in _difference_lines(diffs, unknown)]
    return "\n".join(out) + "\n"
