"""Instructions per hot-path operation, this tree against an earlier commit, counted by
callgrind (repeatable on a noisy machine, unlike time).

Not run by ``make bench`` (it needs valgrind and takes five to eight minutes):

    .venv/bin/python benchmarks/foundation/instructions_hot_paths.py --against REV

REV is checked out into a temporary git worktree, and its packages are put in front of
this tree's on ``PYTHONPATH`` (the editable install maps source folders, so the earlier
commit's modules win). Each operation runs N times and 0 times in the same interpreter;
the difference over N is its cost. The operations, all with ``exporter="none"``:

- ``put+get, plain``: ``queue.Queue`` put+get with procscope imported but not set up;
- ``put+get, unsampled``: the same after ``setup(sample_rate=0)``;
- ``put+get, sampled``: the same at ``sample_rate=1`` (a send and a receive span each);
- ``put+get, sampled, caller``: the same, counting the program's thread alone (the
  recorder's thread, which makes the records into spans, left out; the program ends with
  ``os._exit`` so that no flush runs on it): what a recorded event costs its caller;
- ``thread start+join``: a ``threading.Thread`` at rate 0 (no span);
- ``thread start+join, sampled``: the same at rate 1 (a thread span, when the lifecycle
  default makes one);
- ``state change, recorded``: a traced attribute set inside a recorded span;
- ``record -> plain span``: what the recorder's thread does to make one message record
  into a plain span (the form the trace DB stores), counted on the program's thread:
  sampled put+gets are recorded with the recorder's thread held, then their records are
  made into plain spans for a sink that keeps nothing, against the same run without that
  step (per record: a put+get makes two).

Each run ends with ``procscope.shutdown()``, so that spans made from records by the
recorder's thread are counted with the operations that made them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCES = [
    "src",
    "core/procscope-core/src",
    "exporters/procscope-exporter-tracedb/src",
    "instrumentation/procscope-instrumentation-lifecycle/src",
    "instrumentation/procscope-instrumentation-messaging/src",
    "instrumentation/procscope-instrumentation-state/src",
    "processors/procscope-processor-sampling/src",
]

WORKLOAD = """
import os, queue, sys, threading
mode, n = sys.argv[1], int(sys.argv[2])
import procscope
if mode != "plain":
    sampled = mode in ("state", "sampled", "sampled-caller", "thread-sampled", "drain",
                       "no-drain")
    procscope.setup(sample_rate=1.0 if sampled else 0.0, exporter="none")
if mode in ("drain", "no-drain"):
    from opentelemetry import trace
    from procscope.core.recorder import recorder_of
    recorder = recorder_of(trace.get_tracer_provider())
    recorder.sink = lambda items: None
    recorder.capacity = 10**8
    recorder._draining.acquire()  # (its thread waits: the records stay in the buffer)
    q = queue.Queue(); put, get = q.put, q.get
    for i in range(n):
        put(i); get()
    batch = list(recorder._buffer); recorder._buffer.clear()
    if mode == "drain":
        for start in range(0, len(batch), 4096):
            recorder._deliver_to_sink(batch[start:start + 4096])
    sys.stdout.flush()
    os._exit(0)
if mode in ("plain", "unsampled", "sampled", "sampled-caller"):
    q = queue.Queue(); put, get = q.put, q.get
    for i in range(n):
        put(i); get()
elif mode in ("thread", "thread-sampled"):
    for i in range(n):
        t = threading.Thread(target=int); t.start(); t.join()
elif mode == "state":
    from opentelemetry import trace
    class Counter:
        def __init__(self): self.value = 0
    counter = procscope.trace_state(Counter(), name="counter")
    with trace.get_tracer("bench").start_as_current_span("s"):
        for i in range(n):
            counter.value = i
if mode == "sampled-caller":
    sys.stdout.flush()
    os._exit(0)  # (no flush on this thread: see the docstring)
if mode != "plain":
    procscope.shutdown()  # (records made into spans are counted too)
"""

CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]

OPERATIONS = [
    ("put+get, plain", "plain", 20000),
    ("put+get, unsampled", "unsampled", 20000),
    ("put+get, sampled", "sampled", 2000),
    ("put+get, sampled, caller", "sampled-caller", 2000),
    ("thread start+join", "thread", 2000),
    ("thread start+join, sampled", "thread-sampled", 1000),
    ("state change, recorded", "state", 2000),
    ("record -> plain span", "drain", 2000),
]


def instructions(script: str, mode: str, n: int, pythonpath: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if mode.endswith("-caller") or mode.endswith("drain"):
        return main_thread_instructions(script, mode, n, env)
    done = subprocess.run(
        [*CALLGRIND, sys.executable, script, mode, str(n)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    match = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count from callgrind:\n{done.stderr}")
    return int(match.group(1))


def main_thread_instructions(script: str, mode: str, n: int, env: dict[str, str]) -> int:
    """The instructions of the program's first thread alone (callgrind writes one
    profile per thread; the first is the main thread's)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={out}", sys.executable, script, mode, str(n)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        with open(out + "-01") as file:
            for line in file:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise SystemExit(f"no instruction count for the main thread of {mode}")


def per_op(script: str, mode: str, n: int, pythonpath: str | None) -> float:
    if mode == "drain":  # (per record, against the same records left undelivered)
        return (instructions(script, "drain", n, pythonpath)
                - instructions(script, "no-drain", n, pythonpath)) / (2 * n)
    return (
        instructions(script, mode, n, pythonpath) - instructions(script, mode, 0, pythonpath)
    ) / n


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "--against":
        print(__doc__, file=sys.stderr)
        return 2
    rev = argv[2]
    with tempfile.TemporaryDirectory() as folder:
        old = os.path.join(folder, "old")
        subprocess.run(
            ["git", "-C", ROOT, "worktree", "add", "-q", "--detach", old, rev], check=True
        )
        try:
            script = os.path.join(folder, "workload.py")
            with open(script, "w") as file:
                file.write(WORKLOAD)
            old_path = os.pathsep.join(os.path.join(old, s) for s in SOURCES)
            print(f"{'operation':<26}{rev[:12]:>14}{'this tree':>14}{'change':>10}")
            for label, mode, n in OPERATIONS:
                before = per_op(script, mode, n, old_path)
                after = per_op(script, mode, n, None)
                print(f"{label:<26}{before:>14,.0f}{after:>14,.0f}{(after / before - 1):>+10.1%}")
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", old], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
