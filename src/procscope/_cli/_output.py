"""Helpers shared by the CLI's read commands (traces, show, processes, messages, state).

* :func:`add_db_arguments` and :func:`db_command`: ``--db``/``--json`` and opening the DB;
  an unreadable or foreign DB is exit status 2 with ONE line on stderr.
* :func:`render_table`, and from ``_trees`` :func:`render_tree`: text that fits the
  terminal's width (on a terminal only: piped or redirected output is never cut);
  :func:`prune_tree` and :func:`left_out_note` for big trees and lists.
* ``_stdout``'s :class:`SafeOutput`, installed by :func:`db_command` on stdout: recorded
  text can neither drive the terminal (control characters escaped) nor fail to print
  (glyphs fall back to ASCII, other characters to ``\\x..`` escapes, in any encoding).
* :func:`typed_value`: a recorded repr as the scalar it shows, for ``--json``.
* :func:`format_duration`, :func:`format_time`, :func:`parse_when`, :func:`parse_duration`.
* :func:`print_json`: machine-readable output on stdout for ``--json``.

A command module uses them like this::

    @db_command("processes")
    def cmd_processes(args, db):
        rows = db.processes()
        if args.json:
            return print_json(rows)
        print(render_table(["PID", "NAME"], [[r.pid, r.name] for r in rows]))
        return EXIT_OK
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import functools
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from procscope.core.settings import DEFAULT_DB, ENV_DB

from ._losses import warn_if_incomplete

# Re-exported: the command modules import every helper from here.
from ._stdout import (  # noqa: F401
    SafeOutput,
    as_terminal,
    ellipsis,
    escape_controls,
    line_width,
    safe_stdout,
    stdout_is_terminal,
    terminal_width,
    truncate,
)
from ._trees import Kept, left_out_note, prune_tree, render_tree  # noqa: F401

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

EXIT_OK = 0
EXIT_USAGE = 2

# ---------------------------------------------------------------------------- the DB


def db_path(given: str | None) -> str:
    """The DB a command reads: --db, else $PROCSCOPE_DB, else ./procscope.db (absolute)."""
    raw = given or os.environ.get(ENV_DB, "").strip() or DEFAULT_DB
    return os.path.abspath(os.path.expanduser(raw))


def add_db_arguments(parser: argparse.ArgumentParser, *, run: bool = True) -> None:
    """The options every read command takes: --db, --run (unless ``run`` is False) and
    --json."""
    parser.add_argument(
        "--db", metavar="PATH", help=f"trace DB file (default: ${ENV_DB} or ./{DEFAULT_DB})"
    )
    if run:
        parser.add_argument(
            "--run",
            metavar="ID|all",
            help="the run to read: an id from 'procscope runs' or a unique start of one, "
            "or all (default: the latest run)",
        )
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def chosen_run(args: argparse.Namespace, db: TraceDB) -> str | None:
    """The full id of the run ``--run`` names (the latest run when not given); None for
    ``--run all``, or a DB with no run yet. Raises UnknownRunError (a ValueError)."""
    given = getattr(args, "run", None)
    if given is None:
        return db.latest_run_id()
    if given.strip().lower() == "all":
        return None
    return db.resolve_run(given)


def fail(command: str, message: str) -> int:
    """One line on stderr, and the exit status for bad usage or an unreadable DB."""
    sys.stderr.write(f"procscope {command}: {one_line(message)}\n")
    return EXIT_USAGE


def one_line(text: object) -> str:
    """``text`` on one line: runs of white space (newlines included) folded to one space,
    other control characters escaped."""
    return escape_controls(" ".join(str(text).split()))


def open_db(given: str | None, command: str) -> TraceDB | None:
    """The TraceDB to read, or None after writing the one-line reason to stderr."""
    from procscope.exporters.tracedb import TraceDB, TraceDBError

    path = db_path(given)
    try:
        return TraceDB(path)
    except TraceDBError as exc:
        fail(command, f"cannot read trace DB {exc}")
    except (sqlite3.Error, OSError) as exc:
        fail(command, f"cannot read trace DB {path}: {exc}")
    return None


def db_command(
    command: str,
) -> Callable[[Callable[[argparse.Namespace, TraceDB], int]], Callable[[argparse.Namespace], int]]:
    """Decorator for a command handler ``(args, db) -> exit status``.

    Opens ``args.db`` (exit 2 with one line if it cannot be read), closes it afterwards,
    and turns a query failing on a damaged or foreign file into exit 2 with one line too.
    When the DB records losses, one line on stderr says the recording is incomplete.
    """

    def decorate(
        handler: Callable[[argparse.Namespace, TraceDB], int],
    ) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            from procscope.exporters.tracedb import TraceDBError, UnknownRunError

            db = open_db(getattr(args, "db", None), command)
            if db is None:
                return EXIT_USAGE
            try:
                if hasattr(args, "run"):
                    try:
                        # Every handler reads args.run_id: the run's full id, or None
                        # for all runs.
                        args.run_id = chosen_run(args, db)
                    except UnknownRunError as exc:
                        return fail(command, str(exc))
                with safe_stdout():
                    status = handler(args, db)
                warn_if_incomplete(db, getattr(args, "run_id", None))
                return status
            except (TraceDBError, sqlite3.Error) as exc:
                return fail(command, f"cannot read trace DB {db.path}: {exc}")
            except UnicodeEncodeError as exc:
                # Bytes that are not UTF-8 in an argument (argv keeps them as lone
                # surrogates): no recorded text can hold them, nor can SQLite take them.
                return fail(command, f"{exc.object!r} is not valid UTF-8 text")
            finally:
                db.close()

        return run

    return decorate


# ---------------------------------------------------------------------------- JSON


def to_jsonable(value: Any) -> Any:
    """Records (dataclasses or objects with ``to_dict``) as plain JSON data."""
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def print_json(data: Any) -> int:
    """Write ``data`` as JSON on stdout; returns EXIT_OK for ``return print_json(...)``.

    ASCII only (``ensure_ascii``): every other character, control characters and text
    that is not valid Unicode included, is a ``\\u`` escape, readable in any encoding."""
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, default=str) + "\n")
    return EXIT_OK


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    width: int | None = None,
    right: Iterable[int] = (),
    shrink: Iterable[int] | None = None,
) -> str:
    """Rows as aligned columns fitting ``width`` (by default :func:`line_width`).

    When too wide, columns are cut with "…", never below their header's width (nor 4):
    those in ``shrink`` in that order (each as far as needed before the next), or by
    default the widest first. ``right``: columns aligned right (numbers).
    """
    width = line_width() if width is None else width
    text_rows = [["" if cell is None else one_line(str(cell)) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    gap = 2
    excess = sum(widths) + gap * (len(widths) - 1) - width

    def floor(i: int) -> int:
        return max(len(headers[i]), 4)

    if shrink is None:
        while excess > 0:
            candidates = [i for i in range(len(widths)) if widths[i] > floor(i)]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    else:
        for i in shrink:
            if excess <= 0:
                break
            cut = min(excess, max(0, widths[i] - floor(i)))
            widths[i] -= cut
            excess -= cut
    right_set = set(right)

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            cell = truncate(cell, widths[i])
            parts.append(cell.rjust(widths[i]) if i in right_set else cell.ljust(widths[i]))
        return (" " * gap).join(parts).rstrip()

    out = [line(list(headers))]
    out.extend(line(row) for row in text_rows)
    return "\n".join(out)


def format_duration(ns: int | float | None) -> str:
    """A readable duration: 850 ns, 12.3 µs, 1.2 ms, 3.40 s, 2m 03s, 1h 02m."""
    if ns is None:
        return ""
    ns = float(ns)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1e3:
        return f"{sign}{ns:.0f} ns"
    if ns < 1e6:
        return f"{sign}{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{sign}{ns / 1e6:.1f} ms"
    seconds = ns / 1e9
    if seconds < 60:
        return f"{sign}{seconds:.2f} s"
    if seconds < 3600:
        return f"{sign}{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{sign}{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def format_time(ns: int | None, *, date: bool = True) -> str:
    """Epoch nanoseconds as local time, to the millisecond (``2026-11-24 23:31:37.123``)."""
    if ns is None:
        return ""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    moment = _dt.datetime.fromtimestamp(seconds)
    text = moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{rest // 1_000_000:03d}"


def iso_time(ns: int | None) -> str | None:
    """Epoch nanoseconds as ISO 8601 in UTC, for JSON output."""
    if ns is None:
        return None
    seconds, rest = divmod(int(ns), 1_000_000_000)
    moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


# ---------------------------------------------------------------------------- parsing

_FRACTION = re.compile(r"^(.*?\d{2}:\d{2}:\d{2})[.,](\d+)(.*)$")
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?$")


def parse_when(text: str, *, now: _dt.datetime | None = None) -> int:
    """A moment given by a user, as epoch nanoseconds (the contract's TIME rules).

    ISO 8601 with or without a UTC offset (local time when without; ``Z`` is UTC), a date
    alone (its midnight, local), or a time of day such as ``12:03:05`` (today, local).
    Fractions of a second to the nanosecond. Raises ``ValueError`` with a readable reason.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty time")
    fraction_ns = 0
    body = raw
    match = _FRACTION.match(raw)
    if match:
        digits = match.group(2)
        if len(digits) > 9:
            raise ValueError(f"bad time {text!r}: more than 9 digits of a second")
        fraction_ns = int(digits.ljust(9, "0"))
        body = match.group(1) + match.group(3)
    if body.endswith(("Z", "z")):
        body = body[:-1] + "+00:00"
    if _TIME_OF_DAY.match(raw):
        today = (now or _dt.datetime.now()).date()
        body = today.isoformat() + "T" + body
    try:
        moment = _dt.datetime.fromisoformat(body)
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: expected ISO 8601 (2026-01-31T12:03:05, optionally with "
            "+01:00 or Z) or a time of day (12:03:05, today)"
        ) from None
    seconds: int | None = None
    if moment.tzinfo is None:
        # Local time: mktime applies the local UTC offset in force on that date.
        try:
            seconds = int(time.mktime(moment.timetuple()))
        except (OverflowError, ValueError, OSError):
            moment = moment.replace(tzinfo=_dt.timezone.utc)  # far from any record: no matter
    if seconds is None:
        epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        delta = moment.replace(microsecond=0) - epoch
        seconds = delta.days * 86400 + delta.seconds
    return clamp_time(seconds * 1_000_000_000 + fraction_ns)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A recorded time is a signed 64-bit count of nanoseconds (1677 to 2262): a moment beyond
# is before or after every record, and is compared as the nearest one. The margin (about
# 104 days) leaves room for the slack some queries add to a bound.
TIME_MIN, TIME_MAX = INT64_MIN + 2**53, INT64_MAX - 2**53


def clamp_time(ns: int) -> int:
    """Epoch nanoseconds within what the DB can hold and compare (see TIME_MIN)."""
    return max(TIME_MIN, min(TIME_MAX, ns))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|min|h)?\s*$")
_UNIT_NS = {
    None: 1e9,
    "s": 1e9,
    "ns": 1.0,
    "us": 1e3,
    "µs": 1e3,
    "ms": 1e6,
    "m": 60e9,
    "min": 60e9,
    "h": 3600e9,
}


def parse_duration(text: str) -> int:
    """A duration such as ``250ms``, ``1.5s``, ``20us``, ``2m`` (bare number: seconds), in ns."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r}: expected a number with ns, us, ms, s, m or h")
    ns = float(match.group(1)) * _UNIT_NS[match.group(2)]
    return TIME_MAX if ns >= TIME_MAX else int(ns)  # longer than anything recorded


def parse_attribute(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for attribute filters: VALUE is an int, a float, true/false, or text;
    quote it ("123") to force text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"bad attribute filter {text!r}: expected KEY=VALUE")
    value = value.strip()
    parsed: Any
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        parsed = value[1:-1]
    elif value.lower() in ("true", "false"):
        parsed = value.lower() == "true"
    elif _INT.match(value):
        parsed = int(value)
        if not INT64_MIN <= parsed <= INT64_MAX:
            raise ValueError(
                f"bad attribute filter {text!r}: {value} is beyond any recorded integer "
                "(64 bits); quote it to match text"
            )
    elif _FLOAT.match(value):
        parsed = float(value)
    else:
        parsed = value  # text, as are nan, inf and 1_000
    return key.strip(), parsed


# Numbers as JSON writes them (what the DB holds): no "nan", "inf", "1_000" or "٣".
_INT = re.compile(r"^-?[0-9]+$", re.ASCII)
_FLOAT = re.compile(r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$", re.ASCII)


def time_argument(text: str) -> int:
    """argparse type for a TIME option (``--since``, ``--until``, ``--at``): see parse_when."""
    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def moment_argument(text: str) -> int:
    """argparse type for ``--at``: the END of the moment given, to its precision.

    ``12:03:05`` means up to 12:03:05.999999999 and ``12:03:05.120`` up to .120999999, so
    that a time copied from a table (which shows milliseconds) includes the record shown
    at that time."""
    moment = time_argument(text)
    match = _FRACTION.match(text.strip())
    digits = len(match.group(2)) if match else 0
    return clamp_time(moment + 10 ** (9 - digits) - 1)


COUNT_MAX = 2**62  # room for a query's "one more" (LIMIT n + 1)


def positive_int_argument(text: str) -> int:
    """argparse type for a count such as ``--limit``."""
    value = int(text) if _INT.match(text.strip()) else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return min(value, COUNT_MAX)  # more than there can be: all of them


def pid_argument(text: str) -> int:
    """argparse type for ``--pid``: a process id (a whole number that a pid can be)."""
    value = int(text) if _INT.match(text.strip()) else -1
    if not 0 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"expected a process id, not {text!r}")
    return value


# ---------------------------------------------------------------------------- typed values

# The repr of a scalar, as the instrumentors record values (saferepr): 5, -2.5, 1e-07,
# True, None, 'text'. Anything else (containers, objects, cut reprs) stays text.
_SCALAR_REPR = re.compile(
    r"^(-?[0-9]+|-?[0-9]+\.[0-9]+(e[-+][0-9]+)?|-?[0-9]+e[-+][0-9]+|True|False|None)$"
    r"|^('([^'\\]|\\.)*'|\"([^\"\\]|\\.)*\")$",
    re.ASCII,
)
_TYPED_AT_MOST = 10_000  # characters: longer reprs stay text


def typed_value(value: Any) -> Any:
    """A recorded repr as the scalar it shows (``"5"`` -> 5, ``"'ok'"`` -> ``"ok"``,
    ``"None"`` -> None), for ``--json``; any other value unchanged."""
    if not isinstance(value, str) or len(value) > _TYPED_AT_MOST:
        return value
    if not _SCALAR_REPR.match(value):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
