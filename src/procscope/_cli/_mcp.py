"""``procscope mcp [--db P]``: the MCP server over stdio (docs/ai-tools.md).

The server needs the optional ``mcp`` package (``pip install 'procscope[mcp]'``); without
it the command exits 2 with one line saying so, and no other command is affected. A DB
that does not exist yet is not an error here: the server starts, and each tool call says
how to record one (an assistant's client starts its servers before any recording).
"""

from __future__ import annotations

import argparse
import importlib.util

from ._output import ENV_DB, db_path, fail


def cmd_mcp(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("mcp") is None:
        return fail("mcp", "the MCP server needs the mcp package: pip install 'procscope[mcp]'")
    from procscope._mcp._server import serve

    serve(db_path(args.db))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "mcp",
        help="serve the trace DB to an AI assistant (Model Context Protocol, stdio)",
        description="An MCP server over stdin/stdout that answers questions about the "
        "trace DB with read-only tools (list_runs, process_tree, timeline, messages, "
        "state_history, state_at, find_errors, get_trace, search_spans, schema, query). "
        "Add it to an MCP client's configuration; see docs/ai-tools.md.",
    )
    parser.add_argument(
        "--db", metavar="PATH", help=f"trace DB file (default: ${ENV_DB} or ./procscope.db)"
    )
    parser.set_defaults(func=cmd_mcp)
