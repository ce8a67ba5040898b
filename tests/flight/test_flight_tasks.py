"""Unsampled asyncio tasks in a dump, and in a killed child's recovered records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .conftest import cli, run_program

TASKS = """
import multiprocessing as mp
import os
import signal
import sys
import time

import procscope


async def hop(i):
    import asyncio

    await asyncio.sleep(0)


def tasks():
    import asyncio  # (here only: the parent of the child case never imports it)

    async def main():
        await asyncio.gather(*(asyncio.create_task(hop(i), name=f"hop-{i}")
                               for i in range(3)))
        await procscope.name(asyncio.create_task(hop(9)), "given-9")

    asyncio.run(main())


def child(ready):
    tasks()
    ready.set()
    signal.pause()


if __name__ == "__main__":
    procscope.setup(sample_rate=0.0, db=sys.argv[1])
    if sys.argv[2] == "here":
        tasks()
        procscope.dump("tasks")
    else:  # a spawn child killed after its tasks; this process never imports asyncio
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        worker = ctx.Process(target=child, args=(ready,), name="tasker")
        worker.start()
        assert ready.wait(60)
        time.sleep(0.5)  # (the child's ring reaches its disk mirror every 100-200 ms)
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
        print("asyncio" in sys.modules)
    procscope.shutdown()
"""


def _task_spans(db: Path) -> dict[str, dict[str, Any]]:
    """Span name -> attributes of the task spans of the DB's flight recordings."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        if node["name"].startswith("task "):
            found[node["name"]] = node["attributes"]
        for child in node.get("children", ()):
            walk(child)

    for trace in cli("traces", "--db", str(db))["traces"]:
        for root in cli("show", trace["trace_id"], "--db", str(db))["roots"]:
            walk(root)
    return found


def _check(spans: dict[str, dict[str, Any]], thread: str) -> None:
    for i in range(3):
        attributes = spans[f"task hop-{i}"]
        assert attributes["procscope.lifecycle.kind"] == "task"
        assert attributes["procscope.lifecycle.role"] == "run"
        assert attributes["procscope.task.name"] == f"hop-{i}"
        assert attributes["procscope.task.function"] == "hop"
        assert attributes["thread.name"] == thread
        assert attributes["procscope.flight.recorded"] is True
    assert spans["task given-9"]["procscope.task.function"] == "hop"


def test_unsampled_tasks_are_in_a_dump_with_their_names_and_functions(tmp_path: Path) -> None:
    """At rate 0, each task's end is a flight record; a dump makes each a span named
    after the task (or the name procscope.name() gave it), with its function and thread."""
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, TASKS, str(db), "here")
    assert done.returncode == 0, done.stderr
    _check(_task_spans(db), "MainThread")


def test_a_killed_childs_task_records_are_recovered_by_a_parent_without_asyncio(
    tmp_path: Path,
) -> None:
    """A spawn child's mirrored task records become spans in the parent that recovers
    them, although the parent never imported asyncio (the record kind is known there)."""
    if sys.platform == "win32":
        return
    db = tmp_path / "flight.db"
    done = run_program(tmp_path, TASKS, str(db), "child", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", done.stdout
    _check(_task_spans(db), "MainThread")
