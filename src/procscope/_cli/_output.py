"""Helpers shared by the CLI's read commands (traces, show, processes, messages, state).

* :func:`add_db_arguments` and :func:`db_command`: ``--db``/``--json`` and opening the DB;
  an unreadable or foreign DB is exit status 2 with ONE line on stderr.
* :func:`render_table` and :func:`render_tree`: text that fits the terminal's width.
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
import dataclasses
import datetime as _dt
import functools
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from procscope.core.settings import DEFAULT_DB, ENV_DB

from ._losses import warn_if_incomplete

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

EXIT_OK = 0
EXIT_USAGE = 2

T = TypeVar("T")

# ---------------------------------------------------------------------------- the DB


def db_path(given: str | None) -> str:
    """The DB a command reads: --db, else $PROCSCOPE_DB, else ./procscope.db (absolute)."""
    raw = given or os.environ.get(ENV_DB, "").strip() or DEFAULT_DB
    return os.path.abspath(os.path.expanduser(raw))


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every read command takes: --db and --json."""
    parser.add_argument(
        "--db", metavar="PATH", help=f"trace DB file (default: ${ENV_DB} or ./{DEFAULT_DB})"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def fail(command: str, message: str) -> int:
    """One line on stderr, and the exit status for bad usage or an unreadable DB."""
    sys.stderr.write(f"procscope {command}: {one_line(message)}\n")
    return EXIT_USAGE


def one_line(text: str) -> str:
    return " ".join(str(text).split())


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
            from procscope.exporters.tracedb import TraceDBError

            db = open_db(getattr(args, "db", None), command)
            if db is None:
                return EXIT_USAGE
            try:
                status = handler(args, db)
                warn_if_incomplete(db)
                return status
            except (TraceDBError, sqlite3.Error) as exc:
                return fail(command, f"cannot read trace DB {db.path}: {exc}")
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
    """Write ``data`` as JSON on stdout; returns EXIT_OK for ``return print_json(...)``."""
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, default=str) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------- text


def terminal_width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…" if width > 1 else "…"


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    width: int | None = None,
    right: Iterable[int] = (),
    shrink: Iterable[int] | None = None,
) -> str:
    """Rows as aligned columns fitting ``width`` (the terminal's by default).

    When too wide, columns are cut with "…", never below their header's width (nor 4):
    those in ``shrink`` in that order (each as far as needed before the next), or by
    default the widest first. ``right``: columns aligned right (numbers).
    """
    width = terminal_width() if width is None else width
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


def render_tree(
    roots: Sequence[T],
    label: Callable[[T], str | Sequence[str]],
    children: Callable[[T], Sequence[T]],
    *,
    width: int | None = None,
) -> str:
    """A tree drawn with ├─ └─ │; ``label`` gives a node's line (or lines: the first
    is the node, the others are shown under it, e.g. its events). Lines are cut to width."""
    width = terminal_width() if width is None else width
    out: list[str] = []

    def walk(node: T, prefix: str, connector: str, continuation: str) -> None:
        text = label(node)
        lines = [text] if isinstance(text, str) else list(text)
        kids = children(node)
        out.append(truncate(prefix + connector + (lines[0] if lines else ""), width))
        detail_prefix = prefix + continuation + ("│  " if kids else "   ")
        for extra in lines[1:]:
            out.append(truncate(detail_prefix + extra, width))
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            walk(kid, prefix + continuation, "└─ " if last else "├─ ", "   " if last else "│  ")

    for root in roots:
        walk(root, "", "", "")
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
    if moment.tzinfo is None:
        # Local time: mktime applies the local UTC offset in force on that date.
        seconds = int(time.mktime(moment.timetuple()))
    else:
        epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        delta = moment.replace(microsecond=0) - epoch
        seconds = delta.days * 86400 + delta.seconds
    return seconds * 1_000_000_000 + fraction_ns


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
    return int(float(match.group(1)) * _UNIT_NS[match.group(2)])


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
    else:
        try:
            parsed = int(value)
        except ValueError:
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
    return key.strip(), parsed


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
    return moment + 10 ** (9 - digits) - 1


def positive_int_argument(text: str) -> int:
    """argparse type for a count such as ``--limit``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return value
