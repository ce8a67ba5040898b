"""``procscope mcp`` on the 1,000,000-span DB (tests/conftest.py ``big_db``): every tool
answers within its documented size, saying what it left out. How long each call takes
is measured in benchmarks/mcp/bench_mcp.py, not asserted here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from procscope._cli._output import iso_time
from procscope._mcp._shape import RESULT_CHARS

from .conftest import Ask, converse


def test_every_tool_answers_a_million_spans_within_its_size_bound(big_db: str) -> None:
    """Each answer is at most 20,000 characters; big lists are cut and say how to see
    more; the crashed and killed workers, the failing calls and the traced accounts of
    the latest run are found."""
    info = json.loads(Path(big_db + ".json").read_text())
    run = info["runs"][-1]
    crashed = run["crashed"][0]["name"]
    killed = run["killed"]["name"]
    middle = iso_time((run["start_ns"] + run["end_ns"]) // 2)

    async def script(ask: Ask) -> dict[str, Any]:
        a: dict[str, Any] = {}
        a["runs"] = await ask("list_runs")
        a["tree"] = await ask("process_tree")
        a["messages"] = await ask("messages", limit=200)
        a["results"] = await ask("messages", queue="results", since=middle, limit=200)
        a["crashed"] = await ask("timeline", who=crashed, last=300)
        a["errors"] = await ask("find_errors", limit=100)
        failing = a["errors"].data["errors"][-1]
        a["trace"] = await ask("get_trace", trace_id=failing["trace_id"])
        a["killed"] = await ask("timeline", who=killed, around=failing["time"])
        a["history"] = await ask("state_history", object="account-7", limit=200)
        last = a["history"].data["records"][-1]["time"]
        a["state"] = await ask("state_at", object="account-7", time=last)
        a["failed_applies"] = await ask(
            "search_spans", name="Account.apply", errors_only=True, limit=200
        )
        a["nothing"] = await ask("search_spans", name="no span has this name")
        a["schema"] = await ask("schema")
        a["rows"] = await ask("query", sql="SELECT * FROM spans")
        a["all_runs"] = await ask("process_tree", run="all")
        return a

    a = converse(big_db, script)
    for name, answer in a.items():
        assert len(answer.text) <= RESULT_CHARS, (name, len(answer.text))
        assert not answer.is_error, (name, answer.text)

    runs = a["runs"].data["runs"]
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in reversed(info["runs"])]
    assert sum(r["spans"] for r in runs) == info["spans"]

    tree = a["tree"].data
    assert tree["summary"]["processes"] == 40
    bad = set(tree["summary"]["ended_badly_names"])
    assert {f"{p['name']}:{p['pid']}" for p in [*run["crashed"], run["killed"]]} <= bad
    assert a["all_runs"].data["summary"]["processes"] == 120

    for name in ("messages", "results"):
        data = a[name].data
        assert data["messages"] and data["left_out"]["how_to_see_more"].startswith("the next page")
    assert {m["queue"] for m in a["results"].data["messages"]} == {"results"}
    assert min(m["sent"] for m in a["results"].data["messages"]) >= middle

    story = a["crashed"].data
    assert story["who"].startswith(crashed + ":")
    assert story["entries"][-1]["text"].startswith("exited with code 1")
    assert story["left_out"]["shown"] == len(story["entries"])

    errors = a["errors"].data
    kinds = [e["kind"] for e in errors["errors"]]
    assert kinds[:3] == ["process ended badly"] * 3
    assert errors["errors"][0]["exception"]["type"] == "RuntimeError"
    failed_spans = [e for e in errors["errors"] if "span" in e]
    if "note" in errors["summary"]:
        # A busy machine: only the failed traces read within the time budget are there
        # (maybe none), and the note says so. The traces left unread may be others than
        # the failing calls' (a crashed worker's), so these may all be there.
        counts = [e["count"] for e in failed_spans]
        assert all(0 < count <= run["failed_calls"] for count in counts), (
            counts, run["failed_calls"], errors["summary"])
    else:
        assert [e["count"] for e in failed_spans] == [run["failed_calls"]]
    for failing in failed_spans:
        assert failing["span"] == "Account.apply"
        assert failing["exception"]["type"] == "ValueError"

    trace = a["trace"].data
    assert trace["span_count"] == len(trace["spans"]) and trace["error_spans"] >= 1
    assert a["killed"].data["who"].startswith(killed + ":")

    history = a["history"].data
    shown = len(history["records"])
    assert 0 < shown <= 200 and history["left_out"]["total"] > shown
    assert history["records"][-1]["time"] == history["last"]  # the latest are kept
    assert "until=" in history["left_out"]["how_to_see_more"]
    assert a["state"].data["state"]["balance"] == history["records"][-1]["changes"]["balance"][1]

    failed = a["failed_applies"].data
    assert failed["spans"] and all(s["error"].startswith("ValueError") for s in failed["spans"])
    assert "left_out" in failed

    nothing = a["nothing"].data
    assert nothing["spans"] == [] and ("searched_until" in nothing or "note" in nothing)

    assert "account-7" in a["schema"].data["vocabulary"]["traced_objects"]
    rows = a["rows"].data
    assert rows["rows"] and rows["left_out"]["how_to_see_more"]
