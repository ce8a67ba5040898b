"""Run ids: every process of one program run carries the same one.

A run starts where procscope is set up without an inherited id (a ``setup()`` in a
program nobody traced), or with ``procscope run``, which hands the program it execs a
fresh id and its command (:data:`ENV_RUN_COMMAND`): every process of ``procscope run --
bash -c "python a.py; python b.py"`` is then one run, whose command is what was given to
``procscope run``. The id then travels as the settings do, in the environment
(:data:`ENV_RUN_ID`): fork children keep this module's state, spawn and forkserver
children and Python subprocesses inherit ``os.environ`` (or get it with the settings when
the program passes ``env=``; see ``Settings.as_environ``).

Each process records the id as the resource attribute ``procscope.run.id``; the process
that started the run also records its command line, ``procscope.run.command`` (secrets
masked), which marks it as the run's root (docs/semantic-conventions.md).
"""

from __future__ import annotations

import os
import shlex
import sys

from .scrubbing import scrub_command

__all__ = [
    "ENV_RUN_COMMAND",
    "ENV_RUN_ID",
    "RUN_COMMAND_KEY",
    "RUN_ID_KEY",
    "begin",
    "command_text",
    "current_id",
    "new_run_id",
]

ENV_RUN_ID = "PROCSCOPE_RUN_ID"
#: Set by ``procscope run`` beside a fresh :data:`ENV_RUN_ID`: the command of the run. The
#: first process to set up takes it out of its environment and records it, as the run's
#: root (a shell running two Python programs in turn hands it to both: each records it).
ENV_RUN_COMMAND = "PROCSCOPE_RUN_COMMAND"
RUN_ID_KEY = "procscope.run.id"
RUN_COMMAND_KEY = "procscope.run.command"
_COMMAND_MAX = 1000
_ID_CHARS = frozenset("0123456789abcdef")

# (run id, pid of the process that began it); copied into fork children with the module.
_state: dict[str, object] = {"id": None, "root_pid": 0, "command": None}


def new_run_id() -> str:
    """A fresh run id: 16 random hex digits (runs differ in their first few, so a short
    start of one is enough to name it)."""
    return os.urandom(8).hex()


def _valid(run_id: str) -> bool:
    return 8 <= len(run_id) <= 32 and set(run_id) <= _ID_CHARS


def begin(capture_content: bool = True) -> dict[str, str]:
    """Join the inherited run, or start one; returns the resource attributes to record
    (the command's arguments only with ``capture_content``).

    Called by ``setup()`` before it builds the resource; publishes the id in
    ``os.environ`` for every child."""
    inherited = os.environ.get(ENV_RUN_ID, "").strip().lower()
    if _state["id"] is not None and _state["id"] == inherited:
        run_id = inherited  # set up again in the same process (or a fork child)
    elif inherited and _valid(inherited):
        run_id = inherited
        given = os.environ.pop(ENV_RUN_COMMAND, None)
        root_pid = os.getpid() if given is not None else 0
        _state["id"], _state["root_pid"], _state["command"] = run_id, root_pid, given
    else:
        run_id = new_run_id()
        _state["id"], _state["root_pid"], _state["command"] = run_id, os.getpid(), None
        os.environ[ENV_RUN_ID] = run_id
    attributes = {RUN_ID_KEY: run_id}
    if _state["root_pid"] == os.getpid():
        recorded = _state["command"]
        if isinstance(recorded, str):
            attributes[RUN_COMMAND_KEY] = recorded if capture_content else _program_of(recorded)
        else:
            attributes[RUN_COMMAND_KEY] = command_line(capture_content)
    return attributes


def _program_of(command: str) -> str:
    try:
        return shlex.split(command)[0]
    except (ValueError, IndexError):
        return command.split(" ", 1)[0]


def current_id() -> str | None:
    """This process's run id, once ``begin()`` ran (None before)."""
    value = _state["id"]
    return value if isinstance(value, str) else None


def command_line(with_arguments: bool = True) -> str:
    """The command that started this process, as typed (secrets masked, bounded)."""
    return command_text(list(getattr(sys, "orig_argv", None) or sys.argv or []), with_arguments)


def command_text(argv: list[str], with_arguments: bool = True) -> str:
    """A command as typed, its program's folder left out (secrets masked, bounded)."""
    argv = list(argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    if not with_arguments:
        argv = argv[:1]
    text = shlex.join(scrub_command([str(a) for a in argv]))
    return text if len(text) <= _COMMAND_MAX else text[: _COMMAND_MAX - 1] + "…"
