"""Every tool of ``procscope mcp`` on a recording of ``procscope demo``, through a real MCP
client over stdio: the answers an assistant needs to explain pricer-2's crash."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from .conftest import Ask, converse

CONTRACT_TOOLS = {
    "list_runs", "process_tree", "timeline", "messages", "state_history", "state_at",
    "find_errors", "get_trace", "search_spans", "schema", "query",
}  # fmt: skip


def test_the_server_lists_the_contract_tools_with_descriptions_and_typed_inputs(
    demo_db: Path,
) -> None:
    """tools/list gives exactly the contract's tools, each described for a model, with a
    JSON Schema whose parameters all have a type, and marked read-only."""

    async def script(ask: Ask) -> Any:
        return (await ask.session.list_tools()).tools  # type: ignore[attr-defined]

    tools = converse(demo_db, script)
    assert {t.name for t in tools} == CONTRACT_TOOLS
    for tool in tools:
        assert len(tool.description) > 120, tool.name
        properties = tool.inputSchema["properties"]
        assert all(p.get("type") in ("string", "integer", "boolean") for p in properties.values())
        assert tool.annotations.readOnlyHint is True
    by_name = {t.name: t for t in tools}
    assert set(by_name["messages"].inputSchema["properties"]) >= {
        "from", "to", "queue", "since", "until", "limit",
    }  # fmt: skip
    assert by_name["state_at"].inputSchema["required"] == ["object", "time"]
    assert by_name["timeline"].inputSchema["required"] == ["who"]


def test_an_assistant_finds_why_a_pricer_crashed(demo_db: Path) -> None:
    """From list_runs to the crash: process_tree shows the pricer that got the POISON
    order exited 1, find_errors names the RuntimeError with its stack and what the pricer
    did just before, timeline tells its story to the end, get_trace (by a short id) holds
    the exception event."""

    async def script(ask: Ask) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        answers["runs"] = (await ask("list_runs")).data
        answers["tree"] = (await ask("process_tree")).data
        answers["errors"] = (await ask("find_errors")).data
        crash = answers["errors"]["errors"][0]
        answers["timeline"] = (await ask("timeline", who=crash["who"])).data
        answers["trace"] = (await ask("get_trace", trace_id=crash["trace_id"][:10])).data
        return answers

    answers = converse(demo_db, script)
    runs = answers["runs"]["runs"]
    assert len(runs) == 1 and runs[0]["run_id"] == answers["runs"]["latest_run"]
    assert runs[0]["processes"] == 4 and runs[0]["exit_code"] == 0
    assert "_demo_app" in runs[0]["command"]

    processes = {p["name"]: p for p in answers["tree"]["processes"]}
    assert {"pricer-1", "pricer-2", "ledger"} <= set(processes)
    failed = [p for p in processes.values() if p.get("error")]
    assert len(failed) == 1 and failed[0]["name"].startswith("pricer-")
    pricer = failed[0]
    assert pricer["ended"] == "exit 1" and pricer["depth"] == 1
    assert processes["ledger"]["ended"] == "exit 0"
    assert answers["tree"]["summary"]["ended_badly_names"] == [f"{pricer['name']}:{pricer['pid']}"]

    crash = answers["errors"]["errors"][0]
    assert crash["kind"] == "process ended badly" and crash["ended"] == "exit 1"
    assert crash["who"] == f"{pricer['name']}:{pricer['pid']}"
    assert crash["exception"]["type"] == "RuntimeError"
    assert "POISON" in crash["exception"]["message"]
    assert "raise RuntimeError" in crash["exception"]["stack"]
    before = crash["before_it"]
    assert before and all(e["time"] <= crash["time"] for e in before)
    assert any(e["kind"] == "received" and e.get("queue") == "orders" for e in before)

    story = answers["timeline"]
    assert story["who"] == crash["who"]
    kinds = [e["kind"] for e in story["entries"]]
    # It received the poisoned order at least; whether it priced (sent) one before is
    # up to which pricer the queue served first.
    assert kinds[0] == "started" and "received" in kinds
    assert story["entries"][-1]["text"].startswith("exited with code 1")

    trace = answers["trace"]
    assert trace["trace_id"] == crash["trace_id"]
    names = {s["name"] for s in trace["spans"]}
    assert f"process {pricer['name']}" in names
    process_span = next(s for s in trace["spans"] if s["name"] == f"process {pricer['name']}")
    assert process_span["error"] == "exit code 1"
    assert any(e["name"] == "exception" for e in process_span["events"])
    shown, more = len(trace["spans"]), trace.get("left_out", {}).get("more", 0)
    assert shown + more == trace["span_count"] and shown >= 20


def test_messages_state_search_schema_and_query_on_the_demo(demo_db: Path) -> None:
    """messages to the ledger come from the pricers on queue results; an order nobody
    took is '(not received)'; state_history and state_at rebuild the ledger's totals;
    search_spans finds its four applies; schema names the queues; query counts spans."""

    async def script(ask: Ask) -> dict[str, Any]:
        answers: dict[str, Any] = {
            "to_ledger": (await ask("messages", to="ledger")).data,
            "orders": (await ask("messages", queue="orders", limit=3)).data,
            "all_orders": (await ask("messages", queue="orders")).data,
            "history": (await ask("state_history", object="ledger")).data,
            "applies": (await ask("search_spans", name="Ledger.apply")).data,
            "schema": (await ask("schema")).data,
            "count": (await ask("query", sql="SELECT count(*) AS n FROM spans")).data,
            "runs": (await ask("list_runs")).data,
        }
        last_change = answers["history"]["records"][-1]
        answers["state"] = (await ask("state_at", object="ledger", time=last_change["time"])).data
        first = answers["history"]["records"][0]
        answers["state_before"] = (await ask("state_at", object="ledger", time=first["time"])).data
        return answers

    a = converse(demo_db, script)
    to_ledger = a["to_ledger"]["messages"]
    assert len(to_ledger) == 5  # four priced orders and the end-of-work sentinel
    assert {m["queue"] for m in to_ledger} == {"results"}
    assert all(m["to"].startswith("ledger:") for m in to_ledger)
    assert any(m["from"].startswith("pricer-") for m in to_ledger)
    assert all(m["trace_id"] and m["message_id"] for m in to_ledger)

    assert len(a["orders"]["messages"]) == 3
    page = a["orders"]["left_out"]
    assert page["more"] == "at least one more" and "since=" in page["how_to_see_more"]
    assert any(m["to"] == "(not received)" for m in a["all_orders"]["messages"])

    records = a["history"]["records"]
    assert records[0]["kind"] == "snapshot" and records[0]["reason"] == "start"
    assert [r["kind"] for r in records[1:]] == ["change"] * 4
    # (the two pricers answer in either order: the first change is one order's amount)
    totals = [r["changes"]["total"] for r in records[1:]]
    assert totals[0][0] == "0.0" and totals[0][1] in {"1.5", "0.75", "2.4", "2.5"}
    assert all(before[1] == after[0] for before, after in itertools.pairwise(totals))
    assert totals[-1][1] == "7.15"
    assert a["state"]["state"]["orders"] == "4" and a["state"]["complete"] is True
    assert a["state"]["state"]["total"] == records[-1]["changes"]["total"][1]
    assert a["state_before"]["state"]["orders"] == "0"

    applies = a["applies"]["spans"]
    assert len(applies) == 4 and all(s["who"].startswith("ledger:") for s in applies)
    assert all(s["attributes"]["procscope.state.object"] == "ledger" for s in applies)

    schema = a["schema"]
    assert "spans" in schema["tables"] and "name TEXT" in schema["tables"]["spans"]["columns"]
    assert {"orders", "results"} <= set(schema["vocabulary"]["queues"])
    assert schema["vocabulary"]["traced_objects"] == ["ledger"]
    assert a["count"] == {"columns": ["n"], "rows": [[a["runs"]["runs"][0]["spans"]]]}
