"""procscope traces and show: output, filters, --json, and exit status 2 with one line."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from procscope._cli import _output, main
from procscope.exporters.tracedb import TraceDBSpanExporter

MS = 1_000_000


@pytest.fixture
def cli_db(db_path, make_span):
    """A DB with two traces from just now: an ok one and one with an error and an event."""
    now = time.time_ns()
    spans = [
        make_span("checkout", trace_id=0xA1, span_id=1, start_ns=now - 10 * MS, duration_ns=2 * MS),
        make_span(
            "import orders",
            trace_id=0xB2,
            span_id=2,
            start_ns=now - 5 * MS,
            duration_ns=1500 * MS,
            attributes={"job": "nightly"},
        ),
        make_span(
            "parse row",
            trace_id=0xB2,
            span_id=3,
            parent_id=2,
            start_ns=now - 4 * MS,
            duration_ns=3 * MS,
            error="ValueError: bad row",
            events=[("exception", now - 2 * MS, {"exception.type": "ValueError"})],
        ),
    ]
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    return db_path


def test_traces_lists_a_table(cli_db, capsys, monkeypatch):
    """`procscope traces` prints a header and one row per trace, errors marked, exit 0;
    one-span traces are counted by name below the table unless --all."""
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["traces", "--db", cli_db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == ["and 1 one-span trace, not listed: checkout (1) (--all lists them)"]
    assert main(["traces", "--db", cli_db, "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["TRACE", "ID", "ROOT", "START", "DURATION", "SPANS", "ERRORS"]
    assert lines[1].startswith(format(0xB2, "032x")) and "import orders" in lines[1]
    assert "1.50 s" in lines[1] and "✗ 1" in lines[1]
    assert (
        lines[2].startswith(format(0xA1, "032x")) and "2.0 ms" in lines[2] and "✗" not in lines[2]
    )
    assert all(len(line) <= 100 for line in lines)


def test_traces_filters_and_json(cli_db, capsys):
    """--errors, --min-duration, --name, --attr and --limit filter; --json is parseable."""
    assert main(["traces", "--db", cli_db, "--errors", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["traces"]
    assert [t["root_name"] for t in data] == ["import orders"]
    assert data[0]["has_error"] is True and data[0]["span_count"] == 2
    assert main(["traces", "--db", cli_db, "--min-duration", "1s", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["traces"]) == 1
    assert main(["traces", "--db", cli_db, "--name", "check*", "--json"]) == 0
    assert [t["root_name"] for t in json.loads(capsys.readouterr().out)["traces"]] == ["checkout"]
    assert main(["traces", "--db", cli_db, "--attr", "job=nightly", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["traces"]
    assert [t["root_name"] for t in found] == ["import orders"]
    assert main(["traces", "--db", cli_db, "--limit", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["traces"]) == 1
    assert main(["traces", "--db", cli_db, "--since", "2000-01-01", "--until", "2000-01-02"]) == 0
    assert capsys.readouterr().out.strip() == "no traces match"


def test_show_prints_the_tree_with_events_and_errors(cli_db, capsys, monkeypatch):
    """`procscope show ID` (or a unique prefix) draws the tree, events and the error mark."""
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["show", "--db", cli_db, format(0xB2, "032x")[:31]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"trace {format(0xB2, '032x')}: import orders, 2 span(s)")
    # Each span by its actor name: the process's name, its pid (its exporter's here).
    assert out[1] == f"import orders  1.50 s  @+0 ns  MainProcess:{os.getpid()}"
    assert out[2].startswith("└─ parse row  3.0 ms  @+1.0 ms")
    assert out[2].endswith("✗ ERROR: ValueError: bad row")
    assert out[3].strip().startswith("• ✗ exception @+3.0 ms  exception.type='ValueError'")


def test_show_json(cli_db, capsys):
    """`show --json` gives the summary and nested spans."""
    assert main(["show", "--db", cli_db, "--json", format(0xB2, "032x")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["root_name"] == "import orders"
    assert data["roots"][0]["children"][0]["events"][0]["name"] == "exception"


def test_show_unknown_or_ambiguous_id_exits_2(cli_db, capsys):
    """An id that matches no trace, or several, is exit 2 with one line on stderr."""
    assert main(["show", "--db", cli_db, "f" * 32]) == 2
    assert main(["show", "--db", cli_db, "0000"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "no trace" in err[0] and "several traces" in err[1]


@pytest.mark.parametrize("kind", ["missing", "text", "foreign", "newer", "directory", "empty"])
def test_unreadable_db_exits_2_with_one_line(tmp_path, kind, make_span):
    """Every bad DB file: exit status 2 and exactly one line on stderr, file unchanged."""
    path = tmp_path / "bad.db"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "foreign":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
    elif kind == "newer":
        exporter = TraceDBSpanExporter(str(path))
        assert exporter.export([make_span("x", trace_id=1, span_id=1)]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    before = path.read_bytes() if path.is_file() else None
    for command in (["traces"], ["show", "a" * 32]):
        done = _run_cli([*command, "--db", str(path)])
        assert done.returncode == 2
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert str(path) in done.stderr
    assert (path.read_bytes() if path.is_file() else None) == before


def _run_cli(argv):
    code = "import sys; from procscope._cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )


def test_bad_time_option_exits_2(cli_db):
    """--since with an impossible time is a usage error: exit 2, one line."""
    done = _run_cli(["traces", "--db", cli_db, "--since", "25:99"])
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "bad time" in done.stderr


def test_db_defaults_to_env_then_cwd(cli_db, tmp_path, monkeypatch, capsys):
    """Without --db, $PROCSCOPE_DB is read, else ./procscope.db."""
    monkeypatch.setenv("PROCSCOPE_DB", cli_db)
    assert main(["traces", "--json", "--all"]) == 0
    assert len(json.loads(capsys.readouterr().out)["traces"]) == 2
    monkeypatch.delenv("PROCSCOPE_DB")
    monkeypatch.chdir(tmp_path)
    assert _output.db_path(None) == os.path.join(str(tmp_path), "procscope.db")


def test_parse_when_follows_the_contract():
    """ISO 8601 with offset, without (local), Z, a date, and a time of day (today, local)."""
    assert _output.parse_when("2026-01-31T12:03:05+01:00") == 1769857385 * 10**9
    assert _output.parse_when("2026-01-31T11:03:05Z") == 1769857385 * 10**9
    assert _output.parse_when("2026-01-31T11:03:05.123456789Z") == 1769857385 * 10**9 + 123456789
    local = dt.datetime(2026, 1, 31, 12, 3, 5)
    assert _output.parse_when("2026-01-31 12:03:05") == int(local.timestamp()) * 10**9
    assert _output.parse_when("2026-01-31") == int(dt.datetime(2026, 1, 31).timestamp()) * 10**9
    today = dt.datetime.combine(dt.date.today(), dt.time(12, 3, 5))
    assert _output.parse_when("12:03:05") == int(today.timestamp()) * 10**9
    assert _output.parse_when("12:03:05.5") == int(today.timestamp()) * 10**9 + 500_000_000
    for bad in ("", "noon", "25:00", "2026-13-01", "12:03:05.1234567891"):
        with pytest.raises(ValueError):
            _output.parse_when(bad)


def test_durations_tables_and_trees_render_readably():
    """Durations read as units; tables fit the width given; trees use branch lines."""
    assert [_output.format_duration(n) for n in (850, 12_300, 1_200_000, 3_400_000_000)] == [
        "850 ns",
        "12.3 µs",
        "1.2 ms",
        "3.40 s",
    ]
    assert _output.format_duration(125 * 10**9) == "2m 05s"
    table = _output.render_table(["NAME", "N"], [["x" * 80, 1], ["short", 22]], width=30, right=[1])
    assert all(len(line) <= 30 for line in table.splitlines())
    assert table.splitlines()[1].endswith("…   1")
    roomy = _output.render_table(["A", "NAME"], [["x", "short"]], width=100, shrink=[1])
    assert roomy.splitlines() == ["A  NAME", "x  short"]
    tree = _output.render_tree(
        [("a", [("b", []), ("c", [("d", [])])])], lambda n: n[0], lambda n: n[1], width=40
    )
    assert tree.splitlines() == ["a", "├─ b", "└─ c", "   └─ d"]


def test_show_prints_a_chain_thousands_of_spans_deep(db_path, make_span, capsys):
    """A trace nested 1,500 spans deep (a chain of messages, each handler sending the
    next) is shown, not a RecursionError: the text keeps the first 1,000 and says where
    it cut; --json has every span once, the deepest moved up to start new roots."""
    start = time.time_ns()
    depth = 1500
    chain = [
        make_span(
            f"hop {i}",
            trace_id=0xC4,
            span_id=i + 1,
            parent_id=i if i else None,
            start_ns=start + i * 1000,
            duration_ns=500,
        )
        for i in range(depth)
    ]
    exporter = TraceDBSpanExporter(db_path)
    assert exporter.export(chain) is SpanExportResult.SUCCESS
    exporter.shutdown()
    trace_id = format(0xC4, "032x")
    assert main(["show", trace_id, "--db", db_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("(1,000 of 1,500 spans shown;")
    assert lines[-2].endswith("… 500 span(s) below not shown")  # under hop 999, where it cut
    assert main(["show", trace_id, "--db", db_path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    found, stack = [], list(data["roots"])
    while stack:
        span = stack.pop()
        found.append(span["name"])
        stack.extend(span["children"])
    assert sorted(found) == sorted(f"hop {i}" for i in range(depth))
    assert (
        data["spans_shown"] == depth and data["subtrees_moved_to_roots"] == len(data["roots"]) - 1
    )
