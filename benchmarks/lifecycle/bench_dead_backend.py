"""Fork + join of multiprocessing children, and a fork child's exit, with the OTLP
endpoint down (a closed port; a server that accepts and never answers), against the
plain program (issue 14, finding 3).

    python benchmarks/lifecycle/bench_dead_backend.py [--children N]

Each configuration runs in its own interpreter, which times N fork children started and
joined one after another (Process.start + join: the fork, the child's run and its exit
flush) and then procscope.shutdown(). Before the budgets: 10.2 s a child, 6.1 s shutdown;
the budgets are 0.5 s for a child's exit flush and 3 s for shutdown (docs/lifecycle.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

PROGRAM = r"""
import json, multiprocessing as mp, os, socket, sys, threading, time
config, protocol, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if config == "closed":
    probe = socket.socket(); probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]; probe.close()
else:
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(64)
    port = server.getsockname()[1]
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in iter(int, 1)],
                     daemon=True).start()
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
if config != "plain":
    import procscope
    procscope.setup(exporter="otlp")

def work():
    pass

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    started = time.perf_counter()
    for _ in range(count):
        child = ctx.Process(target=work); child.start(); child.join()
    children = time.perf_counter() - started
    started = time.perf_counter()
    if config != "plain":
        procscope.shutdown()
    print(json.dumps({"per_child": children / count, "shutdown": time.perf_counter() - started}))
"""


def run(config: str, protocol: str, count: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROCSCOPE_"))}
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-c", PROGRAM, config, protocol, str(count)],
            capture_output=True,
            text=True,
            cwd=folder,
            env=env,
            timeout=600,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    count = int(sys.argv[sys.argv.index("--children") + 1]) if "--children" in sys.argv else 3
    plain = run("plain", "grpc", count)
    print(
        f"{count} fork children, one after another;"
        f" plain: {plain['per_child'] * 1000:.1f} ms a child"
    )
    for config in ("closed", "silent"):
        for protocol in ("http/protobuf", "grpc"):
            got = run(config, protocol, count)
            print(
                f"endpoint {config:6} {protocol:13}: {got['per_child'] * 1000:7.1f} ms a child"
                f" (x{got['per_child'] / plain['per_child']:.0f} plain),"
                f" shutdown {got['shutdown']:.2f} s"
            )


if __name__ == "__main__":
    main()
