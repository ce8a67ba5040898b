"""The trace DB the server answers from: opened read-only, reopened when the file is
replaced, every question under a time limit.

One connection, used by one tool call at a time: the server runs calls one after
another on its event loop thread, so no lock is needed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._spec import ToolInputError

if TYPE_CHECKING:
    from procscope.exporters.tracedb import TraceDB

#: How long one tool call may query the DB before it is stopped (query() has its own).
CALL_SECONDS = 5.0


class Reader:
    """Opens the DB at ``path`` on first use (it may not exist yet when the server
    starts: the assistant is told how to record one) and again when the file at ``path``
    was replaced (a new recording)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: TraceDB | None = None
        self._identity: tuple[int, int] | None = None

    def db(self) -> TraceDB:
        from procscope.exporters.tracedb import TraceDB, TraceDBError

        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self.close()
            raise ToolInputError(
                f"no trace DB at {self.path} yet: record a program first (procscope run "
                f"--db {self.path} -- python app.py), or start the server with --db PATH"
            ) from None
        except OSError as exc:
            self.close()
            raise ToolInputError(f"cannot read trace DB {self.path}: {exc}") from None
        identity = (stat.st_dev, stat.st_ino)
        if self._db is None or identity != self._identity:
            self.close()
            try:
                self._db = TraceDB(self.path)
            except TraceDBError as exc:
                raise ToolInputError(f"cannot read trace DB {exc}") from None
            except (sqlite3.Error, OSError) as exc:
                raise ToolInputError(f"cannot read trace DB {self.path}: {exc}") from None
            self._identity = identity
        return self._db

    def run(self, given: str | None) -> str | None:
        """The run a question is about: ``given`` resolved (a unique start of an id), None
        for 'all', the latest run when not given (None when nothing is recorded)."""
        from procscope.exporters.tracedb import UnknownRunError

        db = self.db()
        if given is None or not given.strip():
            return db.latest_run_id()
        if given.strip().lower() == "all":
            return None
        try:
            return db.resolve_run(given.strip())
        except UnknownRunError as exc:
            raise ToolInputError(f"{exc}; list_runs gives every run's id, or pass 'all'") from None

    @contextlib.contextmanager
    def deadline(self, seconds: float = CALL_SECONDS, *, advice: str = "") -> Iterator[None]:
        """Stop the DB work of the block after ``seconds`` (SQLite's progress handler),
        as a tool error saying how to ask a narrower question."""
        conn = self.db().conn
        stop_at = time.monotonic() + seconds
        conn.set_progress_handler(lambda: 1 if time.monotonic() > stop_at else 0, 10_000)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            raise ToolInputError(
                f"stopped after {seconds:g} s on this DB: ask a narrower question"
                + (f" ({advice})" if advice else "")
            ) from None
        finally:
            conn.set_progress_handler(None, 0)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        self._db = None
        self._identity = None
