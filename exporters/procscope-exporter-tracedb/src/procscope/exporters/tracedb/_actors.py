"""One name per actor: a process, a thread in it, or an asyncio task in it.

``name:pid`` for a process (``worker-1:21813``), then ``/thread`` for a thread other than
the main one, or ``/task`` for an asyncio task (``MainProcess:21813/Task-6``). Every
command and every ``--json`` output names actors this way, and ``procscope timeline WHO``
takes the same names back.

A process's name is the lifecycle instrumentor's (``procscope.process.name``: the name
given with ``procscope.name()``, the multiprocessing name, a subprocess's program, the
program's own name at the top), else the multiprocessing name its spans were exported
under: the same process is never ``python3`` in one place and ``MainProcess`` in another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

THREAD_NAME = "thread.name"
TASK_NAME = "procscope.task.name"
MAIN_THREAD = "MainThread"


def actor_name(
    process_name: str | None, pid: int | None, thread: str | None = None, task: str | None = None
) -> str:
    """``name:pid``, ``name:pid/thread`` (not for the main thread) or ``name:pid/task``."""
    if pid is None:
        process = process_name or "?"
    else:
        process = f"{process_name}:{pid}" if process_name else str(pid)
    if task:
        return f"{process}/{task}"
    if thread and thread != MAIN_THREAD:
        return f"{process}/{thread}"
    return process


def process_names(records: Any) -> dict[int, str]:
    """pid -> the process's one name, from ``TraceDB.processes()``'s records (a pid reused
    within the records keeps its last name)."""
    return {r.pid: r.name for r in records if r.pid is not None and r.name}


def span_actor(
    pid: int,
    exported_name: str | None,
    attributes: Mapping[str, Any],
    names: Mapping[int, str],
    *,
    thread: bool = True,
) -> str:
    """The actor that made a span: its process (by its one name), and the thread or task
    its attributes name (``thread``: False for the process alone)."""
    name = names.get(pid) or exported_name
    if not thread:
        return actor_name(name, pid)
    task = attributes.get(TASK_NAME)
    thread_name = attributes.get(THREAD_NAME)
    return actor_name(
        name,
        pid,
        thread_name if isinstance(thread_name, str) else None,
        task if isinstance(task, str) else None,
    )
