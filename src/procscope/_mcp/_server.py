"""The MCP server: the tools over stdio, on the official SDK's low-level server.

The low-level server (not FastMCP) because the contract's parameter names include
``from``, a Python keyword, and because arguments are checked here with messages that say
what to pass instead (:mod:`._spec`). A tool call never ends the server: a bad argument or
an unreadable DB is a tool error (``isError``), and so is a bug of ours, reported as one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from procscope._version import __version__

from . import _errors, _sql, _tools_flow, _tools_spans, _tools_state, _tools_timeline
from ._reader import Reader
from ._shape import RESULT_CHARS, bounded, iso
from ._spec import Tool, ToolInputError

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        *_tools_flow.TOOLS,
        *_tools_timeline.TOOLS,
        *_tools_state.TOOLS,
        *_errors.TOOLS,
        *_tools_spans.TOOLS,
        *_sql.TOOLS,
    )
}
# The list each result's size bound cuts first, and how to ask for what it cut.
_MAIN_LIST = {
    "list_runs": "runs",
    "process_tree": "processes",
    "timeline": "entries",
    "messages": "messages",
    "state_history": "records",
    "find_errors": "errors",
    "get_trace": "spans",
    "search_spans": "spans",
    "query": "rows",
}


def _after(items: list[Any], key: str) -> str:
    """The instant just after the last shown item's ``key`` time (ISO, for since=)."""
    from procscope._cli._output import parse_when

    return str(iso(parse_when(items[-1][key]) + 1)) if items else "(the same since)"


_HINTS: dict[str, Callable[[list[Any]], str]] = {
    "messages": lambda shown: f"the next page: the same call with since='{_after(shown, 'sent')}'",
    "search_spans": lambda shown: (
        f"the next page: the same call with since='{_after(shown, 'start')}'"
    ),
    "state_history": lambda shown: (
        f"earlier ones: the same call with until='{shown[0]['time'] if shown else ''}'"
    ),
    "timeline": lambda shown: (
        f"earlier entries: around='{shown[0]['time'] if shown else ''}' (2 s either side)"
    ),
    "get_trace": lambda shown: "a smaller depth",
    "query": lambda shown: "fewer columns, or LIMIT/OFFSET",
}


INSTRUCTIONS = (
    "procscope recorded how a concurrent Python program's processes, threads, asyncio "
    "tasks, messages and object states behaved, into a trace DB. These tools answer, "
    "read-only: who ran (list_runs, process_tree), what one actor did (timeline), who "
    "sent what to whom (messages), what state an object had (state_history, state_at), "
    "what went wrong and what led to it (find_errors), and details (get_trace, "
    "search_spans, schema, query). Start with list_runs or find_errors. Times in results "
    "are ISO 8601 UTC and can be passed back as they are. Every result is at most "
    f"{RESULT_CHARS:,} characters and says what it left out."
)

_log = logging.getLogger("procscope.mcp")


def call(reader: Reader, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
    """One tool call: its result, or a tool error saying what went wrong and what to do."""
    tool = TOOLS.get(name)
    if tool is None:
        return _error(f"no tool {name!r}; the tools are: {', '.join(TOOLS)}")
    try:
        data = tool.handler(reader, **tool.arguments(arguments))
        text = bounded(
            data,
            _MAIN_LIST.get(name),
            _HINTS.get(name, "a smaller limit"),
            keep_last=name in ("timeline", "state_history"),  # what led up to the end
        )
    except ToolInputError as exc:
        return _error(str(exc))
    except (sqlite3.Error, OSError) as exc:
        return _error(f"cannot read trace DB {reader.path}: {exc}")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\udcff") in a JSON string
        return _error(f"{exc.object!r} is not valid UTF-8 text; send plain text")
    except Exception as exc:  # noqa: BLE001 -- a bug of ours: the server goes on
        _log.exception("procscope mcp: tool %s failed", name)
        return _error(f"internal error in procscope's MCP server, please report it: {exc!r}")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structuredContent=data
    )


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], isError=True
    )


def build(db_path: str) -> tuple[Server, Reader]:
    reader = Reader(db_path)
    server: Server = Server("procscope", version=__version__, instructions=INSTRUCTIONS)

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(
                name=tool.name,
                description=tool.description,
                inputSchema=tool.input_schema(),
                annotations=types.ToolAnnotations(
                    readOnlyHint=True, idempotentHint=True, openWorldHint=False
                ),
            )
            for tool in TOOLS.values()
        ]

    # Arguments are checked by each tool (messages that say what to pass), not here.
    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return call(reader, name, arguments)

    return server, reader


async def _serve(db_path: str) -> None:
    server, reader = build(db_path)
    try:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        reader.close()


def serve(db_path: str) -> None:
    """Serve the trace DB at ``db_path`` over stdin/stdout until the client closes them."""
    import anyio

    anyio.run(_serve, db_path)
