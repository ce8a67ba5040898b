"""Fixtures for the MCP server's tests: a recorded demo, and a real MCP client that
starts ``procscope mcp`` as a subprocess and talks to it over stdio, as an assistant's
client does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROCSCOPE = str(Path(sys.executable).parent / "procscope")


def server_environ(**overrides: str) -> dict[str, str]:
    """The test's environment without procscope or OpenTelemetry settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("OTEL_", "PROCSCOPE_")) or k == "TRACEPARENT")
    }
    env["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
    env.update(overrides)
    return env


@dataclass
class Answer:
    """A tool's answer: its text (what a model reads) and, when it is not an error, the
    JSON object that text holds."""

    is_error: bool
    text: str

    @property
    def data(self) -> dict[str, Any]:
        assert not self.is_error, self.text
        value = json.loads(self.text)
        assert isinstance(value, dict)
        return value


Ask = Callable[..., Awaitable[Answer]]


def converse(
    db: str | os.PathLike[str],
    script: Callable[[Ask], Awaitable[Any]],
    *,
    command: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Start ``procscope mcp --db DB`` (or ``command``), initialise an MCP session, and
    run ``script(ask)``; ``await ask(tool, **arguments)`` calls a tool. Also checks that
    no answer reports an internal error of the server."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    argv = command or [PROCSCOPE, "mcp", "--db", str(db)]
    params = StdioServerParameters(
        command=argv[0], args=argv[1:], env=dict(env or server_environ())
    )

    async def main() -> Any:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()

            async def ask(tool: str, **arguments: Any) -> Answer:
                result = await session.call_tool(tool, arguments)
                text = "".join(getattr(block, "text", "") for block in result.content)
                assert "internal error" not in text, text
                return Answer(bool(result.isError), text)

            ask.session = session  # type: ignore[attr-defined]
            return await script(ask)

    return asyncio.run(main())


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording of ``procscope demo``: processes pricer-1, pricer-2 (crashes on a
    POISON order, exit 1) and ledger, queues orders and results, traced object ledger."""
    path = tmp_path_factory.mktemp("mcp") / "demo.db"
    subprocess.run(
        [PROCSCOPE, "demo", "--db", str(path)],
        env=server_environ(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path
