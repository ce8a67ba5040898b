"""Runs: one program run each (a ``procscope run``, or a ``setup()`` and its children).

Every process of a run records the same ``procscope.run.id`` on its resource; the writer
keeps it in ``resources.run_id``, ``traces.run_id``, and one ``runs`` row per run (schema
version 3, see ``_schema``). Spans a DB of an older version holds (no run id) make one
run of their own, :data:`LEGACY_RUN`.

:class:`RunFilter` is how every query keeps to one run: the run's time range on the
start-time index, checked against the run's resource ids (a handful: one per process
that set itself up), so "spans of run R" costs in proportion to R, not to the DB.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

RUN_COMMAND_KEY = "procscope.run.command"
#: The run id of spans recorded without one (before schema version 3, or by a program's
#: own tracer provider, whose resource procscope does not make).
LEGACY_RUN = "unknown"


class UnknownRunError(ValueError):
    """A run id (or prefix) that names no run, or more than one; ``str()`` says which."""


@dataclass
class Run:
    """One recorded run. Times are epoch nanoseconds.

    ``exit_code``/``exit_signal``: how the run's first process ended, when it recorded
    its end (a SIGKILL leaves None). ``errors``: spans with an error status.
    ``complete``: no process of the run counted a span it could not deliver."""

    run_id: str
    command: str | None
    root_pid: int | None
    start_ns: int
    end_ns: int
    processes: int
    span_count: int
    errors: int
    exit_code: int | None
    exit_signal: int | None
    complete: bool
    lost: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_ns"] = self.duration_ns
        return data


@dataclass(frozen=True)
class RunFilter:
    """SQL that keeps a query to one run. ``legacy``: the spans without a run id."""

    run_id: str
    start_ns: int
    end_ns: int
    legacy: bool = False
    # True when the whole DB is this run (a DB older than runs): no condition at all.
    everything: bool = False

    def spans(self, alias: str = "s") -> tuple[str, list[Any]]:
        """A condition over ``spans <alias>``, and its parameters ("" when none)."""
        if self.everything:
            return "", []
        if self.legacy:
            return (
                f"({alias}.resource_id IS NULL OR {alias}.resource_id IN "
                "(SELECT resource_id FROM resources WHERE run_id IS NULL))",
                [],
            )
        return (
            f"{alias}.start_ns BETWEEN ? AND ? AND {alias}.resource_id IN "
            "(SELECT resource_id FROM resources WHERE run_id = ?)",
            [self.start_ns, self.end_ns, self.run_id],
        )

    def traces(self, alias: str = "t") -> tuple[str, list[Any]]:
        """A condition over ``traces <alias>`` ("" when none)."""
        if self.everything:
            return "", []
        if self.legacy:
            return f"{alias}.run_id IS NULL", []
        return f"{alias}.run_id = ?", [self.run_id]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _has_legacy(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM traces WHERE run_id IS NULL LIMIT 1").fetchone()
    return row is not None


def _legacy_extent(conn: sqlite3.Connection, with_runs: bool) -> tuple[int, int, int, int]:
    where = " WHERE run_id IS NULL" if with_runs else ""
    row = conn.execute(
        "SELECT min(start_ns), max(end_ns), coalesce(sum(span_count), 0), "
        f"coalesce(sum(error_count), 0) FROM traces{where}"
    ).fetchone()
    return int(row[0] or 0), int(row[1] or 0), int(row[2]), int(row[3])


def run_rows(conn: sqlite3.Connection) -> list[tuple[str, int, int, int, int]]:
    """(run id, start, end, spans, error spans) of every run, oldest first."""
    if schema_version(conn) < 3:
        if conn.execute("SELECT 1 FROM traces LIMIT 1").fetchone() is None:
            return []
        return [(LEGACY_RUN, *_legacy_extent(conn, False))]
    rows = [
        (str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        for r in conn.execute(
            "SELECT run_id, start_ns, end_ns, span_count, error_count FROM runs "
            "ORDER BY start_ns, run_id"
        )
    ]
    if _has_legacy(conn):
        rows.append((LEGACY_RUN, *_legacy_extent(conn, True)))
        rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def latest_run_id(conn: sqlite3.Connection) -> str | None:
    """The run that started last, or None for a DB with no spans."""
    rows = run_rows(conn)
    return rows[-1][0] if rows else None


def resolve(conn: sqlite3.Connection, run: str) -> RunFilter:
    """The filter of the run whose id is ``run`` or starts with it; UnknownRunError if
    none or several match."""
    wanted = run.strip().lower()
    rows = run_rows(conn)
    exact = [r for r in rows if r[0] == wanted]
    matches = exact or [r for r in rows if wanted and r[0].startswith(wanted)]
    if not matches:
        known = ", ".join(r[0] for r in rows[-5:]) or "none"
        raise UnknownRunError(f"no run {run!r} in this DB (runs, latest last: {known})")
    if len(matches) > 1:
        names = ", ".join(r[0] for r in matches[:5])
        raise UnknownRunError(f"run {run!r} is ambiguous: {names}")
    run_id, start_ns, end_ns, _spans, _errors = matches[0]
    return resolve_exact(conn, run_id, start_ns, end_ns)


def _root(conn: sqlite3.Connection, flt: RunFilter) -> tuple[str | None, int | None]:
    """(command, pid) of the process that started the run: the one whose resource
    carries the run's command; else the first process of the run that set itself up."""
    if flt.everything:
        rows = conn.execute("SELECT attributes FROM resources ORDER BY resource_id").fetchall()
    elif flt.legacy:
        rows = conn.execute(
            "SELECT attributes FROM resources WHERE run_id IS NULL ORDER BY resource_id"
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT attributes FROM resources WHERE run_id = ? ORDER BY resource_id",
            (flt.run_id,),
        ).fetchall()
    first: dict[str, Any] | None = None
    for (text,) in rows:
        try:
            attributes = json.loads(text)
        except ValueError:
            continue
        if not isinstance(attributes, dict):
            continue
        if first is None:
            first = attributes
        if attributes.get(RUN_COMMAND_KEY):
            return str(attributes[RUN_COMMAND_KEY]), _int(attributes.get("process.pid"))
    if first is None:
        return None, None
    command = first.get("process.command_line") or first.get("process.command")
    return (str(command) if command else None), _int(first.get("process.pid"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def pids_of(conn: sqlite3.Connection, flt: RunFilter) -> list[int]:
    if not flt.legacy:
        rows = conn.execute("SELECT pid FROM run_pids WHERE run_id = ?", (flt.run_id,))
        return [int(r[0]) for r in rows]
    where, params = flt.spans("s")
    sql = "SELECT DISTINCT s.pid FROM spans s" + (f" WHERE {where}" if where else "")
    return [int(r[0]) for r in conn.execute(sql, params)]


def _ending(
    conn: sqlite3.Connection, flt: RunFilter, pid: int | None
) -> tuple[int | None, int | None]:
    """(exit code, signal) the run's first process recorded as its end (``end`` span)."""
    if pid is None:
        return None, None
    where, params = flt.spans("s")
    rows = conn.execute(
        "SELECT s.attributes FROM span_attrs a JOIN spans s ON s.span_pk = a.span_pk "
        "WHERE a.key = 'procscope.lifecycle.kind' AND a.value = 'program' AND s.pid = ?"
        + (f" AND {where}" if where else "")
        + " ORDER BY s.start_ns DESC LIMIT 1",
        (pid, *params),
    ).fetchall()
    for (text,) in rows:
        attributes = json.loads(text or "{}")
        return (
            _int(attributes.get("process.exit.code")),
            _int(attributes.get("procscope.process.exit.signal")),
        )
    return None, None


def losses_filter(flt: RunFilter, pids: list[int]) -> tuple[str, list[Any]]:
    """A condition over ``losses`` for the run's processes (by pid, in its time span)."""
    if flt.everything:
        return "", []
    marks = ",".join("?" * len(pids)) or "NULL"
    return (
        f"pid IN ({marks}) AND process_start_ns <= ? AND updated_ns >= ?",
        [*pids, flt.end_ns, flt.start_ns],
    )


#: ``flight_staged`` read as ``losses`` rows: a recording staged and not yet made into
#: spans (schema version 4) is records the DB does not show yet, "flight_staged".
STAGED_AS_LOSSES = (
    "(SELECT pid, staged_ns AS process_start_ns, process_name, 'flight_staged' AS reason, "
    "records AS count, staged_ns AS updated_ns FROM flight_staged)"
)


#: ``span_backlog`` read as ``losses`` rows: spans stored and not yet made into rows
#: (schema version 5, _backlog.py), "not_indexed": the DB does not show them yet.
BACKLOG_AS_LOSSES = (
    "(SELECT pid, min(stored_ns) AS process_start_ns, process_name, 'not_indexed' AS reason, "
    "sum(spans) AS count, max(stored_ns) AS updated_ns FROM span_backlog "
    "GROUP BY pid, process_name)"
)


def loss_rows(conn: sqlite3.Connection, columns: str, where: str,
              params: list[Any]) -> list[Any]:
    """``SELECT columns`` over ``losses``, the staged recordings and the span backlog
    (each read as empty in a DB older than it), rows with a count, under ``where``."""
    rows: list[Any] = []
    for table in ("losses", STAGED_AS_LOSSES, BACKLOG_AS_LOSSES):
        try:
            rows += conn.execute(
                f"SELECT {columns} FROM {table} WHERE count > 0"
                + (f" AND {where}" if where else ""),
                params,
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
    return rows


def lost_in(conn: sqlite3.Connection, flt: RunFilter, pids: list[int]) -> int:
    where, params = losses_filter(flt, pids)
    return int(sum(total for (total,) in loss_rows(conn, "coalesce(sum(count), 0)", where,
                                                    params)))


def runs(conn: sqlite3.Connection) -> list[Run]:
    """Every run, oldest first."""
    found: list[Run] = []
    conn.execute("BEGIN")
    try:
        for run_id, start_ns, end_ns, span_count, errors in run_rows(conn):
            flt = resolve_exact(conn, run_id, start_ns, end_ns)
            command, root_pid = _root(conn, flt)
            pids = pids_of(conn, flt)
            exit_code, exit_signal = _ending(conn, flt, root_pid)
            lost = lost_in(conn, flt, pids)
            found.append(
                Run(
                    run_id=run_id,
                    command=command,
                    root_pid=root_pid,
                    start_ns=start_ns,
                    end_ns=end_ns,
                    processes=len(pids),
                    span_count=span_count,
                    errors=errors,
                    exit_code=exit_code,
                    exit_signal=exit_signal,
                    complete=lost == 0,
                    lost=lost,
                )
            )
    finally:
        conn.execute("COMMIT")
    return found


def resolve_exact(conn: sqlite3.Connection, run_id: str, start_ns: int, end_ns: int) -> RunFilter:
    """The filter of a run as :func:`run_rows` gives it."""
    if run_id == LEGACY_RUN:
        return RunFilter(run_id, start_ns, end_ns, legacy=True, everything=schema_version(conn) < 3)
    return RunFilter(run_id, start_ns, end_ns)
