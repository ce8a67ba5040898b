"""A backend that is down costs the program no wait at fork, and bounded waits at exit
(issue 14, finding 3).

Real OTLP exporters (http/protobuf and grpc) point at a closed port or at a TCP server
that accepts and never answers. The program times itself; the bounds are far above the
budgets (0.5 s per child's exit flush, 3 s for shutdown) and far below the old
behaviour (three children took 30 s, shutdown 6 s): they tell "does not block" from
"blocks", not fast from slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

HANG_SECONDS = 120

PROGRAM = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, socket, sys, threading, time
    mode, protocol = sys.argv[1], sys.argv[2]
    if mode == "closed":
        probe = socket.socket(); probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]; probe.close()
    else:  # accepts every connection and never answers
        server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(64)
        port = server.getsockname()[1]
        held = []
        def accept():
            while True:
                held.append(server.accept()[0])
        threading.Thread(target=accept, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    import procscope
    procscope.setup(exporter="otlp")

    def work(i):
        return i * 2

    if __name__ == "__main__":
        ctx = mp.get_context("fork")
        started = time.perf_counter()
        for i in range(3):  # one after another, as in the report
            child = ctx.Process(target=work, args=(i,))
            child.start()
            child.join()
        children = time.perf_counter() - started
        started = time.perf_counter()
        procscope.shutdown()
        shutdown = time.perf_counter() - started
        print(json.dumps({"children": children, "shutdown": shutdown}), flush=True)
    """
)


@pytest.mark.parametrize(
    ("mode", "protocol"),
    [
        ("closed", "http/protobuf"),
        ("closed", "grpc"),
        ("silent", "http/protobuf"),
        ("silent", "grpc"),
    ],
)
def test_three_fork_children_and_shutdown_do_not_wait_on_a_dead_backend(
    tmp_path: object, mode: str, protocol: str
) -> None:
    """Three fork children one after another, then procscope.shutdown(), with the OTLP
    endpoint down: children under 5 s in all (30 s before), shutdown under 5 s (6 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, mode, protocol],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=str(tmp_path),
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"hung (killed after {HANG_SECONDS} s)") from None
    assert proc.returncode == 0, err
    times = json.loads(out.strip().splitlines()[-1])
    assert times["children"] < 5.0, (times, err)
    assert times["shutdown"] < 5.0, (times, err)
