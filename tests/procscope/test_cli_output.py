"""Output you can trust: read commands print every character when piped, in any stdout
encoding, with recorded control characters escaped, and --json values with their type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procscope._cli import _output, main

from .conftest import BIN, LONG_NOTE, WEIRD, clean_environ

ESCAPED = WEIRD.encode("unicode_escape").decode("ascii")  # proc\x1b]0;PWNED\x07\x1b[2J


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _trace_id(db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    status, out, _ = _run(["traces", "--db", str(db), "--json"], capsys)
    assert status == 0
    traces = json.loads(out)["traces"]
    return str(max(traces, key=lambda t: t["span_count"])["trace_id"])


def _text_commands(db: Path, trace_id: str) -> list[list[str]]:
    return [
        ["traces", "--db", str(db)],
        ["show", trace_id, "-a", "--db", str(db)],
        ["processes", "--db", str(db)],
        ["messages", "--db", str(db)],
        ["state", "account", "--db", str(db)],
        ["state", "account", "--at", "2262-01-01", "--db", str(db)],
    ]


def test_piped_output_is_never_cut(
    recorded_db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not on a terminal, a long recorded value is printed whole (`| grep` finds it),
    whatever COLUMNS says: in state's history, state --at and show -a."""
    monkeypatch.setenv("COLUMNS", "80")
    trace_id = _trace_id(recorded_db, capsys)
    for args in (
        ["state", "account"],
        ["state", "account", "--at", "2262-01-01"],
        ["show", trace_id, "-a"],
    ):
        status, out, err = _run([*args, "--db", str(recorded_db)], capsys)
        assert status == 0, err
        assert "-END'" in out, args  # the end of the 300-character note, kept
        assert "…" not in out, args


def test_show_attributes_are_wrapped_not_cut_on_a_terminal(
    recorded_db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an 80-column terminal, show's span lines fit 80 columns, and with -a every
    attribute is there in full, wrapped over several lines."""
    monkeypatch.setenv("COLUMNS", "80")
    trace_id = _trace_id(recorded_db, capsys)
    with _output.as_terminal(True):
        status, out, err = _run(["show", trace_id, "-a", "--db", str(recorded_db)], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines[1:])
    # The state change's event carries the note (as recorded: a bounded repr keeping its
    # head and its end): its lines, joined, hold both.
    joined = "".join(line.lstrip("│ ") for line in lines).replace(" ", "")
    assert LONG_NOTE[:80] in joined and "NNN-END'" in joined


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_any_stdout_encoding_prints_with_ascii_glyphs(recorded_db: Path, encoding: str) -> None:
    """With PYTHONIOENCODING=cp1252 or ascii, every read command exits 0, prints text
    valid in that encoding, and draws trees and marks with ASCII stand-ins."""
    env = clean_environ(PYTHONIOENCODING=encoding)
    trace_id = _trace_id_from_subprocess(recorded_db, env)
    outputs = []
    for args in _text_commands(recorded_db, trace_id):
        done = subprocess.run(
            [str(BIN / "procscope"), *args], env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, (args, done.stderr.decode(encoding, "replace"))
        outputs.append(done.stdout.decode(encoding))  # strict: valid in that encoding
    show = outputs[1]
    assert "`- " in show and "├" not in show
    assert "->" in outputs[4]  # state's "old -> new"
    for command in ("show", "processes"):  # their --help names the ✗ mark
        done = subprocess.run(
            [str(BIN / "procscope"), command, "--help"], env=env, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "marked x" in " ".join(done.stdout.decode(encoding).split())


def _trace_id_from_subprocess(db: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "procscope"), "traces", "--json", "--db", str(db)],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    traces = json.loads(done.stdout)["traces"]
    return str(max(traces, key=lambda t: t["span_count"])["trace_id"])


def test_control_characters_in_recorded_names_are_escaped(
    recorded_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A queue, a process, a span and a value named with terminal escape sequences are
    printed as visible escapes (\\x1b...), never as the raw control characters."""
    trace_id = _trace_id(recorded_db, capsys)
    everything = ""
    for args in _text_commands(recorded_db, trace_id):
        status, out, err = _run(args, capsys)
        assert status == 0, (args, err)
        assert not any(ch in out + err for ch in "\x1b\x07\x9b"), args
        everything += out
    assert f"jobs{ESCAPED}" in everything  # the queue, in messages
    assert f"job {ESCAPED}" in everything  # the root span, in traces and show
    assert f"'hello{ESCAPED}'" in everything  # the value, in state


def test_json_gives_recorded_scalars_their_type(
    recorded_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json writes a recorded int as 5, not "5"; a text value as its text; the JSON is
    ASCII with control characters as \\u escapes."""
    status, out, _ = _run(["state", "account", "--json", "--db", str(recorded_db)], capsys)
    assert status == 0
    assert "\x1b" not in out and out.isascii()
    history = json.loads(out)["history"]
    assert history[0]["values"] == [0, "", ""]  # the snapshot: balance=0, note='', label=''
    changes = {record["fields"][0]: record for record in history[1:]}
    assert changes["balance"]["old_values"] == [0] and changes["balance"]["values"] == [5]
    assert changes["label"]["values"] == ["hello" + WEIRD]
    status, out, _ = _run(
        ["state", "account", "--at", "2262-01-01", "--json", "--db", str(recorded_db)], capsys
    )
    fields: dict[str, Any] = json.loads(out)["fields"]
    assert fields["balance"] == 5 and fields["label"] == "hello" + WEIRD
    status, out, _ = _run(["messages", "--json", "--db", str(recorded_db)], capsys)
    assert [m["content"] for m in json.loads(out)] == ["hello" + WEIRD]
    status, out, _ = _run(["timeline", "app", "--json", "--db", str(recorded_db)], capsys)
    sent = [e["content"] for e in json.loads(out)["entries"] if e["kind"] == "sent"]
    assert sent == ["hello" + WEIRD]


def test_typed_value_types_scalar_reprs_only() -> None:
    """Reprs of ints, floats, booleans, None and strings become those values; containers,
    objects, cut reprs and numbers Python would not print stay text."""
    cases = {
        "5": 5,
        "-2.5": -2.5,
        "1e-07": 1e-07,
        "True": True,
        "None": None,
        "'ok'": "ok",
        "'it\\'s'": "it's",
        "[1, 2]": "[1, 2]",
        "inf": "inf",
        "1_000": "1_000",
        "'cut...": "'cut...",
        "<Obj at 0x7f>": "<Obj at 0x7f>",
    }
    assert {text: _output.typed_value(text) for text in cases} == cases


def test_show_filters_say_what_they_left_out(
    recorded_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show --depth/--limit/--name/--pid print part of a trace and say how many spans
    they left out; --json has the kept tree and the counts."""
    trace_id = _trace_id(recorded_db, capsys)
    db = ["--db", str(recorded_db)]
    status, out, _ = _run(["show", trace_id, *db, "--json"], capsys)
    whole = json.loads(out)
    total = whole["span_count"]
    assert total >= 3 and whole["spans_left_out"] == 0
    status, out, _ = _run(["show", trace_id, *db, "--depth", "1"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert f"(1 of {total} spans shown;" in lines[-1]
    assert f"… {total - 1} span(s) below not shown" in out
    status, out, _ = _run(["show", trace_id, *db, "--name", "get*"], capsys)
    assert "get jobs" in out and "put jobs" in out  # the match, and its parent for context
    status, out, _ = _run(["show", trace_id, *db, "--limit", "2", "--json"], capsys)
    limited = json.loads(out)
    assert limited["spans_shown"] == 2 and limited["spans_left_out"] == total - 2
    status, out, _ = _run(["show", trace_id, *db, "--pid", str(os.getpid())], capsys)
    assert status == 0 and f"(0 of {total} spans shown;" in out


def test_ellipsis_glyph_follows_the_stdout_encoding() -> None:
    """A cut cell ends in … where stdout can print it, else in ~ (one column either way)."""

    class Ascii:
        encoding = "ascii"

        def write(self, text: str) -> int:
            return len(text)

    original = sys.stdout
    try:
        sys.stdout = _output.SafeOutput(Ascii())  # type: ignore[assignment]
        assert _output.truncate("abcdef", 4) == "abc~"
    finally:
        sys.stdout = original
    assert _output.truncate("abcdef", 4) == "abc…"


def test_timeline_last_says_what_it_left_out(
    recorded_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """timeline --last N prints the last N entries and says that earlier ones were left
    out (not when none were); its --json says it too."""
    db = ["--db", str(recorded_db)]
    status, out, err = _run(["timeline", "app", *db, "--json"], capsys)
    assert status == 0, err
    total = len(json.loads(out)["entries"])
    assert total >= 3
    status, out, _ = _run(["timeline", "app", *db, "--last", "2"], capsys)
    assert status == 0
    assert out.splitlines()[-1].startswith("(the last 2 entries shown, earlier ones left out;")
    status, out, _ = _run(["timeline", "app", *db, "--last", "2", "--json"], capsys)
    assert json.loads(out)["earlier_entries_left_out"] is True
    status, out, _ = _run(["timeline", "app", *db, "--last", str(total)], capsys)
    assert "left out" not in out.splitlines()[-1]


def test_the_process_tree_is_drawn_with_spaces(
    recorded_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """processes draws a grandchild under its parent with the tree's lines and spaces
    (the indentation was shown as \\x00 escapes once control characters were escaped)."""
    status, out, err = _run(["processes", "--db", str(recorded_db)], capsys)
    assert status == 0, err
    (line,) = [line for line in out.splitlines() if "grandchild" in line]
    assert line.startswith("   └─ grandchild"), out
    assert "\\x00" not in out
