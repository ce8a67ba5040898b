"""procscope side by side with its peers on five workloads (issue 12, item 6).

    .venv/bin/python benchmarks/peers/bench_peers.py [--rounds 3] [--scale 1.0]
        [--only NAME] [--no-peers] [--output FILE]
    .venv/bin/python benchmarks/peers/bench_peers.py --rounds 1 --scale 0.1   # quick

Each workload (peer_workloads.py) is a standalone program that times its own work, so
start-up, set-up and dumps at exit are left out. Configurations, interleaved in rounds
(every configuration once per round, the order rotated each round), median ratio to plain
over the rounds:

* plain: the program alone;
* procscope defaults: ``procscope run --db TMP -- python prog.py`` (full recall, trace DB);
  the DB is then read for the messages with both ends, against what the program sent;
* procscope 0.01: ``--sample-rate 0.01``; procscope tail: ``PROCSCOPE_SAMPLING=tail``;
* VizTracer, every call: ``viztracer --tracer_entries 10000000 -o X.json prog.py``
  (events counted in its output; its buffer is large enough to lose none here);
* contrib: OpenTelemetry's SDK, a BatchSpanProcessor to a counting exporter, and contrib's
  threading and asyncio instrumentors (peer_otel.py).

The peers run in benchmarks/peers/.venv-peers (made here, pinned in
requirements-peers.txt) on the same base interpreter as procscope's virtualenv, so every
configuration runs the same Python build; procscope runs from the project's own
virtualenv, the tree as it is. Without network the peers' virtualenv cannot be made:
then only the plain and procscope columns are run, and the output says so.

Exits 1 if any run fails or a workload's results are wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROGRAM = HERE / "peer_workloads.py"
REQUIREMENTS = HERE / "requirements-peers.txt"
PEERS_VENV = HERE / ".venv-peers"
PY = Path(sys.executable)
PROCSCOPE = PY.parent / "procscope"

TIMES = "\u00d7"  # the multiplication sign of the tables
WORKLOADS = {
    "mp_round_trip": "mp round trip, 20k ints, 2 fork workers",
    "threads_queue": f"4 threads, `queue.Queue`, 50k items {TIMES} 20 µs",
    "asyncio_hops": "2,000 asyncio tasks, queue hops (25 items)",
    "process_pool": "`ProcessPoolExecutor` spawn, 200 tasks",
    "producer_consumer": f"producer/consumer processes (2 fork consumers), 8k msgs {TIMES} 200 µs",
}
CONFIGS = ["plain", "procscope", "procscope_0.01", "procscope_tail", "viztracer", "contrib"]
TITLES = {
    "plain": "plain",
    "procscope": "procscope defaults",
    "procscope_0.01": "procscope 0.01",
    "procscope_tail": "procscope tail",
    "viztracer": "VizTracer (every call)",
    "contrib": "contrib threading+asyncio, SDK",
}
PEER_CONFIGS = {"viztracer", "contrib"}
# VizTracer's circular buffer: when full it overwrites its oldest events.
VIZTRACER_ENTRIES = 10_000_000
# Producer and consumer spans share messaging.message.id (an indexed attribute).
BOTH_ENDS_SQL = """
SELECT COUNT(*) FROM (
  SELECT a.value FROM span_attrs a JOIN spans s ON s.span_pk = a.span_pk
  WHERE a.key = 'messaging.message.id'
  GROUP BY a.value HAVING SUM(s.kind = 3) > 0 AND SUM(s.kind = 4) > 0)
"""


def peers_python() -> Path | None:
    """The peers' virtualenv, made or refreshed when requirements-peers.txt changed."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    base = Path(getattr(sys, "_base_executable", sys.executable))
    print(f"making {PEERS_VENV.relative_to(ROOT)} with {base} ...", flush=True)
    made = subprocess.run([str(base), "-m", "venv", "--clear", str(PEERS_VENV)],
                          check=False).returncode == 0
    if made:
        made = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)], check=False, timeout=600).returncode == 0
    if not made:
        return None
    stamp.write_text(wanted)
    return python


def command(config: str, workload: str, args: list[str], tmp: Path, peers: Path | None,
            ) -> tuple[list[str], dict[str, str], Path | None]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("PROCSCOPE_", "OTEL_"))] + ["PEERS_SETUP"]:
        env.pop(key, None)
    program = [str(PROGRAM), workload, *args]
    if config == "plain":
        return [str(PY), *program], env, None
    if config.startswith("procscope"):
        db = tmp / f"{config}-{workload}-{time.monotonic_ns()}.db"
        cmd = [str(PROCSCOPE), "run", "--db", str(db)]
        if config == "procscope_0.01":
            cmd += ["--sample-rate", "0.01"]
        if config == "procscope_tail":
            env["PROCSCOPE_SAMPLING"] = "tail"
        return [*cmd, "--", str(PY), *program], env, db
    assert peers is not None
    if config == "viztracer":
        out = tmp / f"viz-{workload}-{time.monotonic_ns()}.json"
        cmd = [str(peers.parent / "viztracer"), "--quiet",
               "--tracer_entries", str(VIZTRACER_ENTRIES), "-o", str(out), *program]
        return cmd, env, out
    env["PEERS_SETUP"] = "otel"
    return [str(peers), *program], env, None


def captured(config: str, artifact: Path | None, result: dict[str, Any]) -> dict[str, Any]:
    """What the configuration recorded: spans and messages with both ends, or events."""
    if config.startswith("procscope") and artifact is not None:
        if not artifact.exists():  # nothing was recorded (e.g. no trace sampled)
            return {"spans": 0, "both_ends": 0}
        conn = sqlite3.connect(f"file:{artifact}?mode=ro", uri=True)
        try:
            spans = conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
            both = conn.execute(BOTH_ENDS_SQL).fetchone()[0]
        finally:
            conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{artifact}{suffix}").unlink(missing_ok=True)
        return {"spans": spans, "both_ends": both}
    if config == "viztracer" and artifact is not None:
        data = artifact.read_bytes()
        artifact.unlink()
        # Every trace event has one "ph" key; metadata events ("M") are not calls.
        events = data.count(b'"ph":') - data.count(b'"ph": "M"') - data.count(b'"ph":"M"')
        return {"events": events, "buffer_full": events >= VIZTRACER_ENTRIES * 0.99}
    if config == "contrib":
        return {"spans": result.get("spans", 0)}
    return {}


def run_one(config: str, workload: str, args: list[str], tmp: Path, peers: Path | None,
            ) -> dict[str, Any]:
    cmd, env, artifact = command(config, workload, args, tmp, peers)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"workload"')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{config} {workload}: exit {proc.returncode}\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if not result["ok"]:
        raise RuntimeError(f"{config} {workload}: wrong results\n{proc.stderr[-2000:]}")
    result.update(captured(config, artifact, result))
    # The SDK's batch processor says so, once, when its full queue drops spans.
    result["sdk_dropped"] = "dropping span" in proc.stderr.lower()
    return result


def ratio_text(r: float) -> str:
    return f"{(r - 1) * 100:+.0f}%" if r < 1.995 else f"{r:.1f}{TIMES}"


def capture_text(config: str, runs: list[dict[str, Any]]) -> str:
    last = runs[-1]
    if config.startswith("procscope"):
        expected = last["messages"]
        both = statistics.median(r["both_ends"] for r in runs)
        text = f"{int(statistics.median(r['spans'] for r in runs)):,} spans"
        if expected:
            text += f", {int(both):,}/{expected:,} msgs both ends"
        elif both:
            text += f", {int(both):,} msgs both ends"
        if any(r["sdk_dropped"] for r in runs):
            text += ", SDK queue full: spans dropped"
        return text
    if config == "viztracer":
        text = f"{int(statistics.median(r['events'] for r in runs)):,} events"
        full = any(r["buffer_full"] for r in runs)
        return text + (", buffer full: early events lost" if full else "")
    if config == "contrib":
        spans = int(statistics.median(r["spans"] for r in runs))
        text = f"{spans:,} span{'s' if spans != 1 else ''}"
        return text + (", spans dropped" if any(r["sdk_dropped"] for r in runs) else "")
    return f"{last['messages']:,} msgs sent" if last["messages"] else "-"


def table(results: dict[tuple[str, str], list[dict[str, Any]]], configs: list[str],
          workloads: list[str]) -> str:
    head = "| workload | " + " | ".join(TITLES[c] for c in configs) + " |"
    rows = [head, "|" + " --- |" * (len(configs) + 1)]
    caps = ["| workload | " + " | ".join(TITLES[c] for c in configs) + " |",
            "|" + " --- |" * (len(configs) + 1)]
    for w in workloads:
        plain = results[("plain", w)]
        cells, capcells = [], []
        for c in configs:
            runs = results[(c, w)]
            if c == "plain":
                cells.append(f"{statistics.median(r['wall'] for r in runs) * 1000:.0f} ms"
                             f" / {statistics.median(r['cpu'] for r in runs) * 1000:.0f} ms")
            else:
                wall = statistics.median(r["wall"] / p["wall"] for r, p in zip(runs, plain))
                cpu = statistics.median(r["cpu"] / p["cpu"] for r, p in zip(runs, plain))
                cells.append(f"{ratio_text(wall)} / {ratio_text(cpu)}")
            capcells.append(capture_text(c, runs))
        rows.append(f"| {WORKLOADS[w]} | " + " | ".join(cells) + " |")
        caps.append(f"| {WORKLOADS[w]} | " + " | ".join(capcells) + " |")
    return ("Wall / CPU (plain: median time inside the program; others: median ratio to "
            "plain of the same round)\n\n" + "\n".join(rows)
            + "\n\nWhat each captured (median over the rounds)\n\n" + "\n".join(caps))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)  # about 6 min at scale 1
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", action="append", choices=list(WORKLOADS),
                        help="run only this workload (repeatable)")
    parser.add_argument("--no-peers", action="store_true", help="plain and procscope only")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    workloads = args.only or list(WORKLOADS)
    peers = None if args.no_peers else peers_python()
    configs = [c for c in CONFIGS if peers is not None or c not in PEER_CONFIGS]
    if peers is None and not args.no_peers:
        print("NOTE: the peers' virtualenv could not be made (no network?): "
              "running the plain and procscope columns only", flush=True)
    spin = json.loads(subprocess.run([str(PY), str(PROGRAM), "calibrate"], check=True,
                                     capture_output=True, text=True).stdout)["spin"]
    wl_args = ["--scale", str(args.scale), "--spin", str(spin)]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
                           capture_output=True, text=True, check=False).stdout.strip()
    print(f"tree {commit}{' (with uncommitted changes)' if dirty else ''}, "
          f"{args.rounds} rounds, scale {args.scale}, spin {spin} iterations per 20 µs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {
        (c, w): [] for c in configs for w in workloads}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="procscope-peers-") as tmp_name:
        tmp = Path(tmp_name)
        for rnd in range(args.rounds):
            order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
            for w in workloads:
                for c in order:
                    try:
                        results[(c, w)].append(run_one(c, w, wl_args, tmp, peers))
                    except (RuntimeError, subprocess.TimeoutExpired) as error:
                        print(f"FAILED: {error}", file=sys.stderr)
                        return 1
            print(f"round {rnd + 1}/{args.rounds} done, {time.perf_counter() - started:.0f} s",
                  flush=True)
    text = table(results, configs, workloads)
    if peers is None and not args.no_peers:
        text += ("\n\nVizTracer and contrib were not run: their virtualenv "
                 f"({PEERS_VENV.name}) could not be made.")
    print("\n" + text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
