"""``procscope mcp``: a Model Context Protocol server over a trace DB (stdio, read-only).

Importing this package imports nothing else: the auto-launch hooks ask
:func:`is_server_process` at every Python start-up, and the ``mcp`` SDK is an optional
dependency (``pip install 'procscope[mcp]'``) imported only by :mod:`._server`.
"""

from __future__ import annotations

import os
import sys

# (collections.abc only for the type checker: a cheap child's start-up imports this)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def is_server_process(argv: Sequence[str] | None = None) -> bool:
    """True in the process of ``procscope mcp``, which must record nothing of itself.

    procscope's auto-launch (``procscope run``'s sitecustomize, ``opentelemetry-instrument``)
    asks this before setting anything up: an assistant started under ``procscope run``, or
    with ``PROCSCOPE_*``/``OTEL_*`` in its environment, starts its MCP servers with that
    environment, and the server would otherwise trace itself into the DB it serves.
    ``sys.argv`` is already set when sitecustomize runs.
    """
    words = list(sys.argv if argv is None else argv)
    if not words:
        return False
    program = os.path.basename(words[0])
    if program.endswith(".exe"):
        program = program[: -len(".exe")]
    is_procscope = program == "procscope" or (
        program == "__main__.py" and os.path.basename(os.path.dirname(words[0])) == "procscope"
    )
    if not is_procscope:
        return False
    commands = [word for word in words[1:] if not word.startswith("-")]
    return bool(commands) and commands[0] == "mcp"
