"""A robust CLI: whatever the arguments or the DB's content, a read command works or exits
2 with one line on stderr naming the problem, never a traceback (hypothesis fuzzes every
option of every read command, found in the parser itself, and the time parser)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procscope._cli import _output, build_parser, main

# Commands that do more than read the DB (start programs, serve, signal a pid) are not
# fuzzed here; export is, always writing into the test's folder.
NOT_READ_COMMANDS = {"run", "demo", "dump", "ui", "mcp"}

FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text as argv brings it: any character but NUL, and bytes that are not UTF-8 (Python
# keeps them as lone surrogates).
_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
    st.binary(max_size=12).map(
        lambda b: b.replace(b"\x00", b"").decode("utf-8", "surrogateescape")
    ),
)
_NUMBER = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["0", "-1", "1e400", "0x10", "1_000", "٣", " 7 ", ""]),
    _TEXT,
)
_YEAR = st.integers(1, 9999)
_TIME = st.one_of(
    st.builds(
        lambda y, mo, d, rest: f"{y:04d}-{mo:02d}-{d:02d}{rest}",
        _YEAR,
        st.integers(0, 13),
        st.integers(0, 32),
        st.sampled_from(["", "T00:00:00", "T23:59:59.999999999Z", "T12:00:00+14:00", " 25:61"]),
    ),
    st.builds(
        lambda h, m, s, frac: f"{h}:{m:02d}:{s:02d}{frac}",
        st.integers(0, 30),
        st.integers(0, 70),
        st.integers(0, 70),
        st.sampled_from(["", ".5", ",123456789", ".1234567891"]),
    ),
    st.datetimes().map(lambda moment: moment.isoformat()),
    _TEXT,
)
_DURATION = st.one_of(
    st.builds(
        lambda n, unit: f"{n}{unit}", _NUMBER, st.sampled_from(["", "ns", "us", "µs", "ms", "s"])
    ),
    _TEXT,
)
_ATTRIBUTE = st.builds(lambda k, v: f"{k}={v}", _TEXT, _NUMBER)
_HEX_ID = st.text("0123456789abcdefABCDEF", min_size=0, max_size=40)
_NAMES = st.one_of(
    st.sampled_from(["account", "MainProcess", "worker*", "jobs*", "1", "all", "latest"]),
    _HEX_ID,
    _TEXT,
)


def _value_strategy(action: argparse.Action, known: list[str]) -> st.SearchStrategy[str]:
    """Values for one option, from what its parser expects; ``known``: ids and names
    found in the DB, drawn often so that the commands go past their first check."""
    convert = getattr(action.type, "__name__", "")
    if action.choices:
        return st.one_of(st.sampled_from(sorted(action.choices)), _TEXT)
    if convert in ("time_argument", "moment_argument"):
        return st.one_of(_TIME, _NUMBER)
    if convert in ("positive_int_argument", "pid_argument", "int"):
        return _NUMBER
    if "duration" in convert:
        return st.one_of(_DURATION, _TIME)
    if "attribute" in convert:
        return st.one_of(_ATTRIBUTE, _TEXT)
    if action.dest == "trace_id":
        return st.one_of(st.sampled_from(known), st.sampled_from(known), _HEX_ID, _TEXT)
    return st.one_of(st.sampled_from(known), st.sampled_from(known), _NAMES)


def _read_commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {
                name: sub for name, sub in action.choices.items() if name not in NOT_READ_COMMANDS
            }
    raise AssertionError("procscope has no subcommands")


COMMANDS = _read_commands()


@st.composite
def _command_line(draw: Callable[..., Any], db: str, known: list[str], out: str) -> list[str]:
    """One read command with its positionals and a random choice of its options (each
    given one time in three, a required one always); a file to write is ``out``."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [name]
    options: list[str] = []
    for action in COMMANDS[name]._actions:
        if isinstance(action, argparse._HelpAction) or action.dest == "db":
            continue
        if not action.option_strings:  # a positional: always given
            argv.append(draw(_value_strategy(action, known)))
        elif action.required or draw(st.integers(0, 2)) == 0:
            flag = draw(st.sampled_from(action.option_strings))
            if action.nargs == 0:
                options.append(flag)
            elif action.dest == "output":
                options += [flag, out]
            else:
                options += [flag, draw(_value_strategy(action, known))]
    return [*argv, *options, "--db", db]


def _known(db: Path) -> list[str]:
    """Trace ids (whole and cut), run ids, process names and pids, the traced object."""
    known = {"account", "all", "MainProcess", "helper", "MainThread"}
    status, out, _ = _run(["traces", "--json", "--run", "all", "--db", str(db)])
    assert status == 0
    for trace in json.loads(out)["traces"]:
        known |= {trace["trace_id"], trace["trace_id"][:8]}
    status, out, _ = _run(["processes", "--json", "--run", "all", "--db", str(db)])
    for process in json.loads(out) if status == 0 else []:
        known |= {str(process.get("pid")), str(process.get("name"))}
    if "runs" in COMMANDS:
        status, out, _ = _run(["runs", "--json", "--db", str(db)])
        known |= {run["run_id"] for run in json.loads(out)["runs"]}
    return sorted(known)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse: usage error (2), or --help (0)
            status = int(stop.code or 0)
    return status, out.getvalue(), err.getvalue()


def _assert_works_or_one_line(argv: list[str]) -> None:
    status, _out, err = _run(argv)
    assert status in (0, 2), (argv, status, err)
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("procscope"), (argv, err)


@pytest.fixture(scope="module")
def damaged_db(recorded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the recording whose JSON columns are damaged: text that is not JSON,
    JSON that is not an object, on spans, events, links and resources."""
    copy = tmp_path_factory.mktemp("damaged") / "procscope.db"
    shutil.copy(recorded_db, copy)
    conn = sqlite3.connect(copy)
    with conn:
        conn.execute("UPDATE spans SET attributes = '{\"cut' WHERE span_pk % 3 = 0")
        conn.execute("UPDATE spans SET attributes = '[1, 2]' WHERE span_pk % 3 = 1")
        conn.execute("UPDATE events SET attributes = 'not json' WHERE event_pk % 2 = 0")
        conn.execute("UPDATE events SET attributes = '5' WHERE event_pk % 2 = 1")
        conn.execute("UPDATE links SET attributes = 'null'")
        conn.execute("UPDATE resources SET attributes = '{'")
    conn.close()
    return copy


def test_the_fuzz_covers_every_read_command() -> None:
    """The fuzz finds the read commands in the parser (runs and timeline included once
    they exist): at least those the contract had before them."""
    assert {"traces", "show", "processes", "messages", "state", "export"} <= set(COMMANDS)


def test_every_option_of_every_read_command_works_or_exits_2(
    recorded_db: Path, damaged_db: Path, tmp_path: Path
) -> None:
    """Random options and values for every read command, on a real DB and on one with
    damaged rows: exit 0, or 2 with one line on stderr; never a traceback."""

    known = _known(recorded_db)

    @FUZZ
    @given(
        st.sampled_from([str(recorded_db), str(damaged_db)]).flatmap(
            lambda db: _command_line(db, known, str(tmp_path / "export.out"))
        )
    )
    def check(argv: list[str]) -> None:
        _assert_works_or_one_line(argv)

    check()


@pytest.mark.parametrize(
    "argv",
    [
        ["traces", "--since", "9999-12-31"],
        ["traces", "--until", "0001-01-01T00:00:00+14:00"],
        ["state", "account", "--at", "0001-01-01"],
        ["state", "account", "--at", "9999-12-31"],
        ["traces", "--attr", "k=99999999999999999999"],
        ["show", "0" * 33],
        ["traces", "--name", "\udcff"],
        ["traces", "--min-duration", "99999999999999999999999h"],
        ["traces", "--limit", "99999999999999999999999"],
        ["state", "account", "--pid", "99999999999999999999999"],
        ["timeline", "¹"],  # (a digit to str.isdigit, not to int(): found by the fuzz)
        ["timeline", "MainProcess:²"],
    ],
)
def test_the_inputs_that_gave_tracebacks(recorded_db: Path, argv: list[str]) -> None:
    """The issue's examples, one by one: each works or exits 2 with one line."""
    _assert_works_or_one_line([*argv, "--db", str(recorded_db)])


def test_every_read_command_reads_a_damaged_db(damaged_db: Path, tmp_path: Path) -> None:
    """Each read command on a DB with damaged JSON rows exits 0 (the damage shown as
    procscope.damaged_json) or 2 with one line."""
    status, out, _ = _run(["traces", "--db", str(damaged_db), "--json"])
    assert status == 0
    traces = json.loads(out)["traces"]
    trace_id = max(traces, key=lambda t: t["span_count"])["trace_id"]
    for argv in (
        ["traces"],
        ["show", trace_id, "-a"],
        ["processes"],
        ["messages"],
        ["state", "account"],
        ["state", "account", "--at", "2262-01-01"],
        ["export", "--format", "otlp-json", "-o", str(tmp_path / "out.json")],
        ["export", "--format", "perfetto", "-o", str(tmp_path / "out.perfetto")],
    ):
        _assert_works_or_one_line([*argv, "--db", str(damaged_db)])
    status, out, _ = _run(["show", trace_id, "-a", "--db", str(damaged_db)])
    assert "procscope.damaged_json" in out


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@FUZZ
@given(_TIME)
def test_the_time_parser_gives_a_recordable_time_or_a_value_error(text: str) -> None:
    """parse_when takes any text: a time within what the DB can hold, or ValueError."""
    try:
        ns = _output.parse_when(text)
    except ValueError:
        return
    assert _output.TIME_MIN <= ns <= _output.TIME_MAX


@FUZZ
@given(st.datetimes(timezones=st.just(dt.timezone.utc)))
def test_the_time_parser_reads_iso_times_exactly(moment: dt.datetime) -> None:
    """An ISO 8601 time with its offset is that instant, to the microsecond (clamped to
    the range the DB can hold, about 1678-2261)."""
    delta = moment - _EPOCH
    expected = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    assert _output.parse_when(moment.isoformat()) == _output.clamp_time(expected)
