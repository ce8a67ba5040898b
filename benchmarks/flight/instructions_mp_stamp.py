"""Instructions an unsampled multiprocessing message costs, with the flight recorder's
sender stamp (issue 13), this tree against an earlier commit, counted by callgrind.

Not run by ``make bench`` (it needs valgrind and takes about six minutes):

    .venv/bin/python benchmarks/flight/instructions_mp_stamp.py --against REV

REV's messaging package (the only one the stamp touches) is extracted to a temporary
folder and put in front of this tree's on ``PYTHONPATH``. Each operation runs N times
and 0 times at ``sample_rate=0`` (``exporter="none"``), with
``PROCSCOPE_FLIGHT_RECORDER`` off and on; the difference over N is its cost, counted for
the program's main thread alone (``--separate-threads``: what the caller pays) and for
the whole process (with ``multiprocessing.Queue``'s feeder thread, which pickles):

- ``mp.Queue put+get``: a ``multiprocessing.Queue`` put and get in one process;
- ``Pipe send+recv``: the two ends of a ``multiprocessing.Pipe(duplex=False)``.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESSAGING = "instrumentation/procscope-instrumentation-messaging/src"
N = 3000

WORKLOAD = """
import multiprocessing, sys
mode, n = sys.argv[1], int(sys.argv[2])
import procscope
procscope.setup(sample_rate=0.0, exporter="none")
if mode == "mp":
    q = multiprocessing.Queue(); put, get = q.put, q.get
else:
    r, w = multiprocessing.Pipe(duplex=False); put, get = w.send, r.recv
for i in range(n):
    put(i); get()
procscope.shutdown()
"""


def count(workdir: str, script: str, pythonpath: str | None, flight: str, mode: str,
          n: int) -> tuple[int, int]:
    """(main thread's instructions, the whole process's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    env["PROCSCOPE_FLIGHT_RECORDER"] = flight
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = os.path.join(workdir, "callgrind")
    for old in glob.glob(out + ".*"):
        os.unlink(old)
    subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                    f"--callgrind-out-file={out}.%p", sys.executable, script, mode, str(n)],
                   env=env, check=True, capture_output=True)
    totals = {}
    for path in glob.glob(out + ".*"):
        with open(path) as file:
            for line in file:
                if line.startswith(("totals:", "summary:")):
                    totals[path] = int(line.split()[1])
                    break
    main = [v for path, v in totals.items() if path.endswith("-01")]
    return main[0], sum(totals.values())


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "--against":
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory(prefix="mp-stamp-") as workdir:
        archive = os.path.join(workdir, "before.tar")
        subprocess.run(["git", "-C", ROOT, "archive", "-o", archive, argv[2], MESSAGING],
                       check=True)
        subprocess.run(["tar", "-xf", archive, "-C", workdir], check=True)
        before = os.path.join(workdir, MESSAGING)
        script = os.path.join(workdir, "workload.py")
        with open(script, "w") as file:
            file.write(WORKLOAD)
        print(f"{'operation':<20}{'recorder':>9}{'tree':>8}{'main thread':>13}"
              f"{'whole process':>15}")
        for mode, label in (("mp", "mp.Queue put+get"), ("pipe", "Pipe send+recv")):
            for flight in ("off", "on"):
                for tree, path in ((argv[2][:10], before), ("this", None)):
                    main1, whole1 = count(workdir, script, path, flight, mode, N)
                    main0, whole0 = count(workdir, script, path, flight, mode, 0)
                    print(f"{label:<20}{flight:>9}{tree:>8}{(main1 - main0) / N:>13,.0f}"
                          f"{(whole1 - whole0) / N:>15,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
