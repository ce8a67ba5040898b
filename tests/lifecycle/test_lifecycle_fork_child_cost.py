"""What a ``multiprocessing`` fork child does for procscope, beyond what it must: no
thread pool to renew its resource, no exit flush thread when it recorded nothing. (What
that costs is measured in benchmarks/startup; here, what the child does.)"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

# A child reports the threads started in it, by name, and its own resource's
# service.instance.id (the provider's, as the program would read it).
HELPERS = """
import json, os, threading
from opentelemetry import trace

PARENT = os.getpid()
_start = threading.Thread.start

def start(self):
    if os.getpid() != PARENT:
        with open(f"threads-{os.getpid()}.txt", "a") as out:
            out.write(self.name + "\\n")
    return _start(self)

threading.Thread.start = start

def work(done):
    instance = trace.get_tracer_provider().resource.attributes.get("service.instance.id")
    done.put(json.dumps({"pid": os.getpid(), "instance": instance}))
"""

BODY = """
import glob, multiprocessing as mp, re
ctx = mp.get_context("fork")
done = ctx.SimpleQueue()
for _ in range(2):
    child = ctx.Process(target=work, args=(done,))
    child.start()
    report = json.loads(done.get())
    child.join()
    names = []
    for path in glob.glob(f"threads-{child.pid}.txt"):
        names = [re.sub(r"\\d+", "N", name) for name in open(path).read().split()]
    report["threads"] = names
    print(json.dumps(report))
print(json.dumps({"parent_instance": trace.get_tracer_provider().resource.attributes.get(
    "service.instance.id")}))
"""


def test_an_unsampled_fork_child_starts_no_thread_but_the_sigterm_watch(run_program: Any) -> None:
    """At sample rate 0 a fork child records nothing: it starts neither the SDK's thread
    pool (for its resource) nor an exit flush; only the SIGTERM watch."""
    run = run_program(
        BODY,
        helpers=HELPERS,
        setup='procscope.setup(db=sys.argv[1], exporter="tracedb", sample_rate=0.0)',
        env={"PROCSCOPE_FLIGHT_RECORDER": "off"},
    )
    assert run.returncode == 0, run.stderr
    children = [line for line in run.lines if "threads" in line]
    assert len(children) == 2
    for child in children:
        assert child["threads"] == ["procscope-sigterm-watch"], child


def test_a_fork_child_gets_a_service_instance_id_of_its_own(run_program: Any) -> None:
    """As with the SDK's own provider: each fork child's resource has a new
    service.instance.id, and its spans in the DB carry it."""
    run = run_program(BODY, helpers=HELPERS)
    assert run.returncode == 0, run.stderr
    children = [line for line in run.lines if "instance" in line]
    parent = next(line["parent_instance"] for line in run.lines if "parent_instance" in line)
    ids = {parent, *(child["instance"] for child in children)}
    assert len(ids) == 3 and None not in ids, run.lines
    with closing(sqlite3.connect(Path(run.db_path))) as db:
        stored = {
            pid: json.loads(attributes).get("service.instance.id")
            for pid, attributes in db.execute(
                "SELECT DISTINCT s.pid, r.attributes FROM spans s "
                "JOIN resources r ON r.resource_id = s.resource_id"
            )
        }
    for child in children:
        assert stored[child["pid"]] == child["instance"], (parent, stored, children)


def test_a_fork_child_whose_only_span_is_its_own_starts_no_drain_thread(
    run_program: Any,
) -> None:
    """At the defaults a child that records nothing but its own process span has it
    delivered by its exit flush: no drain thread is started for that one record, and
    the span is in the DB."""
    run = run_program(BODY, helpers=HELPERS)
    assert run.returncode == 0, run.stderr
    children = [line for line in run.lines if "threads" in line]
    assert len(children) == 2
    for child in children:
        assert child["threads"] == ["procscope-sigterm-watch", "procscope-exit-flush"], child
    with closing(sqlite3.connect(Path(run.db_path))) as db:
        recorded = {
            pid
            for (pid,) in db.execute("SELECT pid FROM spans WHERE name LIKE 'process %'")
        }
    assert {child["pid"] for child in children} <= recorded


FORK_RESOURCES = """
import json, os, pickle, sys

import procscope
from opentelemetry import trace

procscope.setup(exporter="none")
provider = trace.get_tracer_provider()
print(json.dumps({"who": "parent", "attrs": dict(provider.resource.attributes)}), flush=True)
child = os.fork()
if child == 0:
    resource = provider.resource
    grandchild = os.fork()  # (before this child has read its own resource)
    if grandchild == 0:
        print(json.dumps({"who": "grandchild", "attrs": dict(provider.resource.attributes)}),
              flush=True)
        os._exit(0)
    os.waitpid(grandchild, 0)
    attrs = dict(resource.attributes)
    copy = pickle.loads(pickle.dumps(resource))
    print(json.dumps({"who": "child", "attrs": attrs, "copy": dict(copy.attributes) == attrs,
                      "equal": copy == resource and hash(copy) == hash(resource),
                      "tracer": dict(trace.get_tracer("t").resource.attributes) == attrs}),
          flush=True)
    os._exit(0)
os.waitpid(child, 0)
"""


def test_a_fork_childs_resource_is_its_parents_with_an_instance_id_of_its_own(
    tmp_path: Path,
) -> None:
    """The child's resource, made at its first use, is its parent's but for the
    service.instance.id; a grandchild forked before the child read it gets a third id;
    the resource pickles and compares as a plain one."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    done = subprocess.run([sys.executable, "-c", FORK_RESOURCES], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    seen = {line["who"]: line for line in map(json.loads, done.stdout.splitlines())}
    key = "service.instance.id"
    ids = {seen[who]["attrs"][key] for who in ("parent", "child", "grandchild")}
    assert len(ids) == 3, seen
    for who in ("child", "grandchild"):
        rest = {k: v for k, v in seen[who]["attrs"].items() if k != key}
        assert rest == {k: v for k, v in seen["parent"]["attrs"].items() if k != key}
    assert seen["child"]["copy"] and seen["child"]["equal"] and seen["child"]["tracer"]
