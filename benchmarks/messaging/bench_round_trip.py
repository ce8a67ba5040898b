"""Issue 12's mp round trip, end to end: the parent puts N ints on a
``multiprocessing.Queue``, two workers double them onto a result queue, the parent sums
the results and joins the workers. Plain, then under ``procscope run`` at its defaults
(full recall, trace DB), with fork, spawn and forkserver workers.

Reported per start method (medians over the rounds): the time inside the program (from
the workers' start to their join: their exit flush included), the wall time of the whole
command, the CPU each group of threads used inside (the program's main threads, its
other threads such as multiprocessing's feeders, procscope's own threads), and what a
user reads back: messages that ``procscope messages`` lists with
both their sender and receiver, of the 2N+2 sent, and the line ``procscope traces``
prints on stderr when the recording is incomplete (none expected).

With ``--against REV`` each round also runs the traced program with commit REV (checked
out into a temporary git worktree, its packages first on ``PYTHONPATH``; this tree's
traced runs then get its own source folders there likewise): before and after, side by
side in one run.

    python benchmarks/messaging/bench_round_trip.py [--n 20000] [--rounds 1] [--quick]
        [--against REV]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAM = Path(__file__).with_name("round_trip.py")
ROOT = Path(__file__).resolve().parent.parent.parent
SOURCES = [str(path.relative_to(ROOT)) for pattern in ("core/*/src", "instrumentation/*/src",
           "processors/*/src", "exporters/*/src", "src") for path in sorted(ROOT.glob(pattern))]
METHODS = ("fork", "spawn", "forkserver")
BIN = Path(sys.executable).with_name("procscope")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE", "_PROCSCOPE"))}


# The program's threads, grouped for the CPU table: procscope's own (its recorder, the
# DB relay, the exit flush...) apart from the program's and multiprocessing's.
def _thread_group(name: str) -> str:
    if name.startswith(("procscope", "Otel")):
        return "procscope threads"
    return "main thread" if name == "MainThread" else "other threads"


def _cpu(stderr: str) -> dict[str, float]:
    """CPU seconds by "ROLE GROUP" (round_trip.py's ``cpu`` lines; workers summed)."""
    cpu: dict[str, float] = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "cpu":
            key = f"{parts[1]} {_thread_group(parts[2])}"
            cpu[key] = cpu.get(key, 0.0) + float(parts[3])
    return cpu


def _inside(stderr: str) -> float:
    for line in stderr.splitlines():
        if line.startswith("inside "):
            return float(line.split()[1])
    raise RuntimeError(f"the program failed:\n{stderr}")


def one_run(
    folder: Path, method: str, n: int, traced: bool, tree: str | None = None
) -> dict[str, object]:
    """One run of the program; for a traced one, what the DB holds. ``tree``: a source
    tree whose packages go first on PYTHONPATH (procscope as of another commit)."""
    script = PROGRAM
    db = folder / f"rt-{method}-{'old' if tree and tree != str(ROOT) else 'new'}.db"
    for stale in folder.glob(f"rt-{method}.db*"):
        stale.unlink() if stale.is_file() else None
    command = [sys.executable, str(script), method, str(n)]
    if traced:
        command = [str(BIN), "run", "--db", str(db), "--", *command]
    env = _clean_env()
    env.pop("PYTHONPATH", None)
    if tree is not None and traced:
        env["PYTHONPATH"] = os.pathsep.join(os.path.join(tree, source) for source in SOURCES)
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - started
    result: dict[str, object] = {"inside": _inside(run.stderr), "wall": wall,
                                 "cpu": _cpu(run.stderr)}
    if traced:
        listed = subprocess.run(
            [str(BIN), "messages", "--db", str(db), "--json", "--limit", str(10 * n)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        messages = json.loads(listed.stdout)
        result["both_ends"] = sum(1 for m in messages if m["sender"] and m["receiver"])
        traces = subprocess.run(
            [str(BIN), "traces", "--db", str(db), "--limit", "1"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        incomplete = [line for line in traces.stderr.splitlines() if "incomplete" in line]
        result["incomplete"] = incomplete[0] if incomplete else ""
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="ints sent (20000)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (1)")
    parser.add_argument("--quick", action="store_true", help="5,000 ints, one round")
    parser.add_argument("--against", metavar="REV", help="also run commit REV, traced")
    args = parser.parse_args()
    n = 5000 if args.quick else args.n
    rounds = 1 if args.quick else max(1, args.rounds)
    results: dict[tuple[str, bool | str], list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-round-trip-") as tmp:
        folder = Path(tmp)
        forms: list[tuple[bool | str, str | None]] = [(False, None), (True, None)]
        if args.against:
            old = str(folder / "old")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", old,
                            args.against], check=True)  # fmt: skip
            forms = [(False, None), (True, str(ROOT)), ("old", old)]
        try:
            for _ in range(rounds):
                for method in METHODS:
                    for form, tree in forms:
                        results.setdefault((method, form), []).append(
                            one_run(folder, method, n, form is not False, tree)
                        )
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", old],
                               check=False)  # fmt: skip
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    print(f"mp round trip, {n:,} ints, 2 workers, {rounds} round(s), median; load {load}")
    print()
    against = f" | {args.against[:10]} inside / wall | its messages with both ends" \
        if args.against else ""
    print("| start method | plain inside / wall | procscope run inside / wall | "
          f"messages with both ends | incomplete?{against} |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |" + (" --- | --- |" if args.against else ""))
    for method in METHODS:
        plain_runs, traced_runs = results[(method, False)], results[(method, True)]

        def median(runs: list[dict[str, object]], key: str) -> float:
            return statistics.median(float(run[key]) for run in runs)  # type: ignore[arg-type]

        both = min(int(run["both_ends"]) for run in traced_runs)  # type: ignore[call-overload]
        incomplete = "; ".join(str(run["incomplete"]) for run in traced_runs if run["incomplete"])
        inside, wall = median(plain_runs, "inside"), median(plain_runs, "wall")
        traced_inside, traced_wall = median(traced_runs, "inside"), median(traced_runs, "wall")
        row = (
            f"| {method} | {inside:.2f} s / {wall:.2f} s "
            f"| {traced_inside:.2f} s / {traced_wall:.2f} s ({traced_inside / inside:.1f}x inside) "
            f"| {both:,} of {2 * n + 2:,} (fewest) | {incomplete or 'no'} |"
        )
        if args.against:
            old_runs = results[(method, "old")]
            old_inside, old_wall = median(old_runs, "inside"), median(old_runs, "wall")
            old_both = min(int(run["both_ends"]) for run in old_runs)  # type: ignore[call-overload]
            row += (f" {old_inside:.2f} s / {old_wall:.2f} s ({old_inside / inside:.1f}x inside)"
                    f" | {old_both:,} |")
        print(row)
    print_cpu(results, bool(args.against))
    return 0


def print_cpu(results: dict[tuple[str, bool | str], list[dict[str, object]]],
              against: bool) -> None:
    """Where the CPU inside goes: each group's seconds (medians), plain and traced."""
    groups = sorted({key for runs in results.values() for run in runs
                     for key in run["cpu"]})  # type: ignore[attr-defined]
    if not groups:
        return  # (no /proc here)
    forms: list[tuple[bool | str, str]] = [(False, "plain"), (True, "procscope run")]
    if against:
        forms.append(("old", "earlier commit"))
    print()
    print("CPU inside (s, medians; workers summed, up to the end of their loop; the parent "
          "up to the join):")
    print()
    print("| start method | run | " + " | ".join(groups) + " | all |")
    print("| --- | --- |" + " --- |" * (len(groups) + 1))
    for method in METHODS:
        for form, label in forms:
            runs = results[(method, form)]
            cells = [statistics.median(run["cpu"].get(g, 0.0) for run in runs)  # type: ignore[attr-defined]
                     for g in groups]
            print(f"| {method} | {label} | " + " | ".join(f"{c:.2f}" for c in cells)
                  + f" | {sum(cells):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
