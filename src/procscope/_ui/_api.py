"""The viewer's JSON API: GET only, answers computed from the trace DB, read-only.

| path | answers |
| --- | --- |
| ``/api/runs`` | the recorded runs, newest first |
| ``/api/overview?run=ID`` | the run's time range, lanes, traced objects, losses |
| ``/api/window?run=ID&start=NS&end=NS&px=N`` | spans (or density), arrows, state marks |
| ``/api/span?run=ID&pk=N`` | one span's details: attributes, events (stacks), links |
| ``/api/cursor?run=ID&at=NS[&since=NS]`` | every object's state at an instant, messages in flight |
| ``/api/search?run=ID&q=TEXT`` | spans whose name contains TEXT (at most 50) |

Times are nanoseconds since the run's ``t0`` (in ``/api/overview``). docs/viewer.md has
the fields. One connection per request thread would be wasteful for a page that asks one
thing at a time, so the server keeps a small pool (:class:`Viewer`); the scopes (lanes,
long spans) are cached per run, and a cached scope is shared by request threads under
its lock (its lanes grow as windows discover threads).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

from . import _details
from ._lanes import Lanes
from ._window import Scope, long_spans, window

ALL_RUNS = "all"
POOL_SIZE = 2


class ApiError(Exception):
    """A request the API refuses: ``status`` and a one-line message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(params: dict[str, str], name: str, default: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, f"missing parameter {name!r}")
        return default
    try:
        return int(float(raw))
    except (ValueError, OverflowError):
        raise ApiError(400, f"parameter {name!r} is not a number: {raw[:40]!r}") from None


class Viewer:
    """The API over one trace DB file."""

    def __init__(self, path: str, default_run: str | None = None) -> None:
        from procscope.exporters.tracedb import TraceDB

        self.path = path
        self._open = lambda: TraceDB(path)
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._pool.put(self._open())  # fails here, before serving, on an unreadable DB
        self._made = 1
        self._made_lock = threading.Lock()
        self._scopes: dict[str, Scope] = {}
        self._scope_lock = threading.Lock()
        self.default_run = default_run

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    @contextlib.contextmanager
    def _db(self) -> Iterator[Any]:
        try:
            db = self._pool.get_nowait()
        except queue.Empty:
            with self._made_lock:
                make = self._made < POOL_SIZE
                self._made += make
            db = self._open() if make else self._pool.get()
        try:
            yield db
        finally:
            self._pool.put(db)

    # ------------------------------------------------------------------ runs and scopes

    def _runs(self, db: Any) -> list[dict[str, Any]]:
        runs = getattr(db, "runs", None)
        if runs is None:
            t0, t1 = _extent(db.conn)
            return [{"run_id": ALL_RUNS, "command": None, "start_ns": t0, "end_ns": t1}]
        return [run.to_dict() for run in runs()]

    def _scope(self, db: Any, run: str | None) -> Scope:
        run_id = run or self.default_run or ALL_RUNS
        with self._scope_lock:
            scope = self._scopes.get(run_id)
        if scope is not None:
            return scope
        scope_run = None
        if run_id == ALL_RUNS:
            t0, t1 = _extent(db.conn)
        else:
            match = [r for r in self._runs(db) if str(r["run_id"]).startswith(run_id)]
            if len(match) != 1:
                raise ApiError(404, f"no single run matches {run_id[:40]!r}")
            t0, t1 = int(match[0]["start_ns"]), int(match[0]["end_ns"])
            scope_run = str(match[0]["run_id"])
        threshold, rows = long_spans(db.conn, t0, t1)
        scope = Scope(
            t0=t0,
            t1=t1,
            lanes=Lanes(db.conn, db, between=(t0, t1), run=scope_run),
            long_ns=threshold,
            long=rows,
        )
        with self._scope_lock:
            return self._scopes.setdefault(run_id, scope)

    # ------------------------------------------------------------------ endpoints

    def get(self, route: str, params: dict[str, str]) -> dict[str, Any]:
        handler = _ROUTES.get(route)
        if handler is None:
            raise ApiError(404, f"no such API path: {route[:60]!r}")
        with self._db() as db:
            return handler(self, db, params)

    def runs(self, db: Any, params: dict[str, str]) -> dict[str, Any]:
        runs = self._runs(db)
        for run in runs:
            run["start_ns"], run["end_ns"] = str(run["start_ns"]), str(run["end_ns"])
        return {"runs": runs, "default": self.default_run}

    def overview(self, db: Any, params: dict[str, str]) -> dict[str, Any]:
        run = params.get("run")
        with self._scope_lock:
            # A fresh look each time the page loads: the DB may have grown since.
            self._scopes.pop(run or self.default_run or ALL_RUNS, None)
        scope = self._scope(db, run)
        with self._scope_lock:
            lanes = [lane.to_dict() for lane in scope.lanes.ordered()]
        for lane in lanes:
            for key in ("start_ns", "end_ns"):
                value = lane.pop(key)
                lane[key[:-3]] = None if value is None else scope.rel(value)
        return {
            "db": self.path,
            "t0_ns": str(scope.t0),
            "duration": scope.t1 - scope.t0,
            "lanes": lanes,
            "objects": _objects(db, run or self.default_run),
            "losses": [loss.to_dict() for loss in db.losses()],
        }

    def window(self, db: Any, params: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(db, params.get("run"))
        start = _int(params, "start", 0)
        end = _int(params, "end", scope.t1 - scope.t0)
        if end <= start:
            raise ApiError(400, "'end' must be after 'start'")
        with self._scope_lock:
            return window(db.conn, scope, start, end, _int(params, "px", 1000))

    def span(self, db: Any, params: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(db, params.get("run"))
        found = _details.span(db, scope, _int(params, "pk"))
        if found is None:
            raise ApiError(404, "no such span")
        return found

    def cursor(self, db: Any, params: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(db, params.get("run"))
        at = _int(params, "at")
        since = _int(params, "since", max(0, at - 10_000_000_000))
        with self._scope_lock:
            return _details.cursor(db, scope, at, since)

    def search(self, db: Any, params: dict[str, str]) -> dict[str, Any]:
        scope = self._scope(db, params.get("run"))
        text = params.get("q", "").strip()
        if not text:
            raise ApiError(400, "missing parameter 'q'")
        with self._scope_lock:
            return _details.search(db, scope, text[:200])


_ROUTES = {
    "/api/runs": Viewer.runs,
    "/api/overview": Viewer.overview,
    "/api/window": Viewer.window,
    "/api/span": Viewer.span,
    "/api/cursor": Viewer.cursor,
    "/api/search": Viewer.search,
}


def _objects(db: Any, run: str | None) -> list[str]:
    """The traced objects of ``run`` (every run's for ``all``)."""
    if run is None or run == ALL_RUNS:
        return list(db.state_objects())
    return list(db.state_objects(run))


def _extent(conn: Any) -> tuple[int, int]:
    """First start and last end of the whole DB (two index seeks: one min/max query
    over both columns would scan the table)."""
    first = conn.execute("SELECT min(start_ns) FROM spans").fetchone()[0]
    last = conn.execute("SELECT max(end_ns) FROM spans").fetchone()[0]
    if first is None:
        raise ApiError(404, "the trace DB holds no span")
    return int(first), int(last)
