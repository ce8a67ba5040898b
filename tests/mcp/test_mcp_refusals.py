"""What ``procscope mcp`` refuses, and how: bad arguments and a missing DB are tool
errors that say what to pass instead (the server goes on answering), query() cannot
write, the server records nothing of itself, and without the SDK the command says how
to install it."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import PROCSCOPE, Ask, converse, server_environ


def _bytes_of(db: Path) -> dict[str, str]:
    """A digest of the DB file and of any -wal/-shm beside it."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(db.parent.glob(db.name + "*"))
    }


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("no_such_tool", {}, "the tools are: list_runs"),
    ("timeline", {}, "who is required"),
    ("timeline", {"who": "nobody-at-all"}, "ledger:"),
    ("timeline", {"who": "ledger", "last": "many"}, "last: expected a whole number"),
    ("timeline", {"who": "ledger", "last": "²"}, "last: expected a whole number"),
    ("timeline", {"who": "ledger", "last": 0}, "from 1 to 300"),
    ("timeline", {"who": "ledger", "around": "half past noon"}, "expected ISO 8601"),
    ("messages", {"sender": "ledger"}, "messages takes: from, to, queue"),
    (
        "messages",
        {"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"},
        "must be after since",
    ),
    ("state_history", {"object": "no-such-object"}, "known: ledger"),
    ("state_at", {"object": "ledger"}, "time is required"),
    ("state_at", {"object": "ledger", "time": "yesterday-ish"}, "time: bad time"),
    ("get_trace", {"trace_id": "not-hex!"}, "expected up to 32 hex digits"),
    ("get_trace", {"trace_id": "0" * 32}, "no trace"),
    ("get_trace", {"trace_id": "ab", "depth": -1}, "depth: expected a whole number from 0"),
    ("search_spans", {"attr": "no-equals-sign"}, "expected KEY=VALUE"),
    ("search_spans", {"errors_only": "yes"}, "expected true or false"),
    ("find_errors", {"run": "no-such-run"}, "list_runs gives every run's id"),
    ("query", {"sql": "SELEC count(*) FROM spans"}, "syntax error"),
    ("query", {"sql": "SELECT x FROM nowhere"}, "no such table"),
    ("query", {"sql": ""}, "expected one SELECT statement"),
]


def test_bad_arguments_are_tool_errors_that_say_what_to_pass(demo_db: Path) -> None:
    """Each bad call is an isError answer naming the parameter and what it takes; the
    server answers a good call after all of them. A sender nobody is gets no message and
    a note naming the processes there are."""

    async def script(ask: Ask) -> tuple[list[Any], Any, Any]:
        answers = [await ask(tool, **arguments) for tool, arguments, _ in BAD_CALLS]
        return answers, await ask("list_runs"), await ask("messages", to="nobody-at-all")

    answers, after, nobody = converse(demo_db, script)
    assert nobody.data["messages"] == [] and "ledger:" in nobody.data["note"]
    for (tool, arguments, expected), answer in zip(BAD_CALLS, answers):
        assert answer.is_error, (tool, arguments, answer.text)
        assert expected in answer.text, (tool, arguments, answer.text)
    assert after.data["runs"]


def test_a_missing_db_is_a_tool_error_until_a_recording_appears(
    demo_db: Path, tmp_path: Path
) -> None:
    """Started on a DB that does not exist yet, the server answers every tool with how
    to record one; once the file is there (a recording made), the same server reads it.
    A file that is not a trace DB is a tool error too."""
    path = tmp_path / "later.db"

    async def script(ask: Ask) -> list[Any]:
        answers = [await ask("list_runs"), await ask("query", sql="SELECT 1")]
        path.write_bytes(b"not a database, just text\n" * 10)
        answers.append(await ask("process_tree"))
        path.unlink()
        shutil.copyfile(demo_db, path)
        answers.append(await ask("list_runs"))
        return answers

    missing, missing_query, foreign, recorded = converse(path, script)
    for answer in (missing, missing_query):
        assert answer.is_error
        assert f"no trace DB at {path} yet" in answer.text and "procscope run" in answer.text
    assert foreign.is_error and "cannot read trace DB" in foreign.text
    assert recorded.data["runs"][0]["processes"] == 4


WRITES = [
    "INSERT INTO spans (trace_id, span_id, name, kind, start_ns, end_ns, status_code, pid) "
    "VALUES (x'00', 1, 'x', 0, 0, 0, 0, 1)",
    "UPDATE spans SET name = 'changed'",
    "DELETE FROM spans",
    "DROP TABLE spans",
    "CREATE TABLE notes (x)",
    "ALTER TABLE spans ADD COLUMN x",
    "ATTACH DATABASE ':memory:' AS other",
    "PRAGMA writable_schema = ON",
    "PRAGMA query_only = OFF",
    "PRAGMA user_version = 99",
    "WITH gone AS (SELECT span_pk FROM spans) DELETE FROM spans WHERE span_pk IN gone",
    "SELECT 1; DROP TABLE spans",
    "BEGIN IMMEDIATE",
    "VACUUM",
]


def test_query_refuses_every_write_and_the_db_stays_byte_for_byte(
    demo_db: Path, tmp_path: Path
) -> None:
    """INSERT, UPDATE, DELETE, DROP, CREATE, ALTER, ATTACH, PRAGMA writable_schema and
    query_only, a CTE with DELETE, a second statement, BEGIN, VACUUM: each refused as a
    tool error; the file is unchanged, and a SELECT and PRAGMA table_info still answer."""
    db = tmp_path / "copy.db"
    shutil.copyfile(demo_db, db)
    before = _bytes_of(db)

    async def script(ask: Ask) -> tuple[list[Any], Any, Any]:
        refused = [await ask("query", sql=sql) for sql in WRITES]
        described = await ask("query", sql="PRAGMA table_info(spans)")
        return refused, await ask("query", sql="SELECT count(*) FROM spans"), described

    refused, count, described = converse(db, script)
    assert [row[1] for row in described.data["rows"]][:2] == ["span_pk", "trace_id"]
    for sql, answer in zip(WRITES, refused):
        assert answer.is_error, (sql, answer.text)
    assert "read-only" in refused[0].text
    assert _bytes_of(db) == before
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    conn.close()
    assert count.data["rows"] == [[spans]] and spans > 0


@pytest.mark.parametrize("launcher", ["procscope run", "opentelemetry-instrument"])
def test_the_server_records_nothing_of_itself_under_auto_launch(
    demo_db: Path, tmp_path: Path, launcher: str
) -> None:
    """An assistant started under ``procscope run`` (or ``opentelemetry-instrument`` with
    procscope's distro) starts its servers with the auto-launch in their environment: the
    server still records no span (it recorded 50, and 43, of its own before), into its
    own DB or the one it serves."""
    served = tmp_path / "served.db"
    shutil.copyfile(demo_db, served)
    before = _bytes_of(served)
    other = tmp_path / "other.db"
    server = [PROCSCOPE, "mcp", "--db", str(served)]
    env = server_environ()
    if launcher == "procscope run":
        command = [PROCSCOPE, "run", "--db", str(other), "--", *server]
    else:
        command = [str(Path(PROCSCOPE).parent / "opentelemetry-instrument"), *server]
        env.update(
            PROCSCOPE_DB=str(other),
            OTEL_PYTHON_DISTRO="procscope",
            OTEL_PYTHON_CONFIGURATOR="procscope",
        )

    async def script(ask: Ask) -> list[Any]:
        return [await ask(tool) for tool in ("list_runs", "process_tree", "find_errors")]

    answers = converse(served, script, command=command, env=env)
    assert all(not a.is_error for a in answers)
    assert _bytes_of(served) == before
    if other.exists() and other.stat().st_size:
        with sqlite3.connect(f"file:{other}?mode=ro", uri=True) as conn:
            assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 0
        conn.close()


def test_without_the_mcp_package_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    """With the SDK not importable, ``procscope mcp`` exits 2 with one line naming
    pip install 'procscope[mcp]', and ``procscope --help`` still works."""
    block = "import sys; sys.modules['mcp'] = None; from procscope._cli import main; "
    mcp = subprocess.run(
        [sys.executable, "-c", block + f"sys.exit(main(['mcp', '--db', '{tmp_path}/x.db']))"],
        capture_output=True, text=True, env=server_environ(), timeout=60,
    )  # fmt: skip
    assert mcp.returncode == 2
    assert mcp.stderr.count("\n") == 1 and "pip install 'procscope[mcp]'" in mcp.stderr
    helped = subprocess.run(
        [sys.executable, "-c", block + "sys.exit(main(['--help']))"],
        capture_output=True, text=True, env=server_environ(), timeout=60,
    )  # fmt: skip
    assert helped.returncode == 0 and " mcp " in helped.stdout
