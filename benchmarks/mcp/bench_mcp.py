"""How long each ``procscope mcp`` tool takes on the 1,000,000-span DB, through a real MCP
client over stdio (the round trip an assistant pays), and how big each answer is.

    python benchmarks/mcp/bench_mcp.py [--rounds N] [--spans N]

The DB is benchmarks/tracedb/big_db.py's, built once and cached under the temp dir. Each
call is made ``--rounds`` times in one session (the first round also opens the DB and
warms SQLite's page cache, as a session's first questions do); the table gives the first
time, the median of the others and the answer's size. docs/performance.md, "MCP server".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tracedb"))

from big_db import cached_big_db  # noqa: E402


def calls(info: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The questions, with names and times taken from the DB's description."""
    from procscope._cli._output import iso_time

    run = info["runs"][-1]
    middle = iso_time((run["start_ns"] + run["end_ns"]) // 2)
    crashed = run["crashed"][0]["name"]
    return [
        ("list_runs", {}),
        ("process_tree", {}),
        ("process_tree", {"run": "all"}),
        ("timeline", {"who": crashed}),
        ("timeline", {"who": crashed, "around": middle}),
        ("timeline", {"who": str(run["main"]["pid"])}),  # the busiest: 125,000 spans a run
        ("timeline", {"who": str(run["main"]["pid"]), "around": middle}),
        ("messages", {}),
        ("messages", {"queue": "results", "since": middle}),
        ("messages", {"to": crashed}),
        ("state_history", {"object": "account-7"}),
        ("state_at", {"object": "account-7", "time": middle}),
        ("find_errors", {}),
        ("get_trace", {"trace_id": "{error_trace}"}),
        ("search_spans", {"name": "Account.apply", "errors_only": True}),
        ("search_spans", {"attr": "procscope.state.object=account-3"}),
        ("search_spans", {"name": "no span has this name"}),
        ("schema", {}),
        ("query", {"sql": "SELECT name, count(*) FROM spans GROUP BY name"}),
        ("query", {"sql": "SELECT * FROM spans"}),
    ]


async def measure(db: str, rounds: int, info: dict[str, Any]) -> list[dict[str, Any]]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    procscope = str(Path(sys.executable).parent / "procscope")
    params = StdioServerParameters(command=procscope, args=["mcp", "--db", db])
    rows = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        error_trace = ""
        for tool, arguments in calls(info):
            if arguments.get("trace_id") == "{error_trace}":
                arguments = {"trace_id": error_trace}
            times, text, is_error = [], "", False
            for _ in range(rounds):
                started = time.perf_counter()
                result = await session.call_tool(tool, arguments)
                times.append(time.perf_counter() - started)
                text = "".join(getattr(block, "text", "") for block in result.content)
                is_error = bool(result.isError)
            if tool == "find_errors" and not is_error:
                error_trace = json.loads(text)["errors"][-1]["trace_id"]
            rows.append(
                {
                    "call": f"{tool}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})",
                    "first_ms": times[0] * 1000,
                    "median_ms": statistics.median(times[1:] or times) * 1000,
                    "chars": len(text),
                    "answer": "error: " + text[:60] if is_error else "ok",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spans", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    db = cached_big_db(args.spans)
    info = json.loads(Path(db + ".json").read_text())
    rows = asyncio.run(measure(db, args.rounds, info))
    print(f"{info['spans']:,} spans, {len(info['runs'])} runs; {args.rounds} rounds; {db}")
    print("| call | first | median of the rest | answer (characters) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| `{row['call']}` | {row['first_ms']:.0f} ms | {row['median_ms']:.0f} ms | "
            f"{row['answer']} ({row['chars']:,}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
