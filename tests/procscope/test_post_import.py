"""Libraries patched when the program imports them, not at set-up (issue 12, start-up).

asyncio and transitions cost every process their import; procscope patches them only
once the program imports them (``procscope.core.post_import``). These tests run real
programs and check what a user would: that nothing is imported for them, that what they
import later is traced, and that the import itself is untouched.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any


def test_asyncio_imported_after_setup_is_traced(run_app: Any, tmp_path: Path) -> None:
    """setup() leaves asyncio unimported; a program that imports it afterwards gets its
    tasks and asyncio.Queue messages recorded, as when it imported asyncio first."""
    result = run_app(
        """
        import sys
        import procscope
        procscope.setup(exporter="tracedb", db="t.db", sample_rate=1.0)
        print("asyncio", "asyncio" in sys.modules, "transitions" in sys.modules)
        import asyncio

        async def worker(q):
            await q.put(41)

        async def main():
            q = asyncio.Queue()
            await asyncio.create_task(worker(q), name="worker")
            print("got", await q.get())

        asyncio.run(main())
        procscope.shutdown()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["asyncio False False", "got 41"]
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM spans ORDER BY start_ns")]
    assert "task worker" in names, names
    assert "put q@app.py:12" in names and "get q@app.py:12" in names, names


def test_a_watched_import_is_what_a_plain_one_gives(run_app: Any) -> None:
    """The module comes with its own loader on it and its spec; the hook runs once, after
    the module's code; procscope's finder leaves sys.meta_path once nothing waits; a
    cancelled hook never runs; and a failing hook does not fail the program's import."""
    result = run_app(
        """
        import sys
        from procscope.core.post_import import when_imported
        finders = list(sys.meta_path)
        seen = []
        when_imported("json", lambda m: seen.append(("json", hasattr(m, "dumps"))))
        when_imported("json", lambda m: seen.append(("again", m.__name__)))
        cancel = when_imported("csv", lambda m: seen.append("csv"))
        when_imported("wave", lambda m: 1 / 0)
        cancel()
        import json, csv, wave
        print(seen)
        print(type(json.__loader__).__name__, type(json.__spec__.loader).__name__)
        print(type(wave.__loader__).__name__, wave.Wave_read.__name__)
        print(sys.meta_path == finders)
        when_imported("json", lambda m: seen.append("now"))
        print(seen[-1])
        """,
        env={"PROCSCOPE_RAISE_INTERNAL_ERRORS": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[('json', True), ('again', 'json')]",
        "SourceFileLoader SourceFileLoader",
        "SourceFileLoader Wave_read",
        "True",
        "now",
    ]


def test_multiprocessing_imported_after_setup_is_traced(run_app: Any, tmp_path: Path) -> None:
    """setup() leaves multiprocessing unimported (about 8 ms that most programs never
    pay); a program that imports it afterwards gets its processes, their queue messages
    and its ProcessPoolExecutor's tasks recorded."""
    result = run_app(
        """
        import sys
        import procscope
        procscope.setup(exporter="tracedb", db="t.db", sample_rate=1.0)
        print("multiprocessing", "multiprocessing" in sys.modules)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        def child(q):
            q.put(41)

        def square(x):
            return x * x

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,), name="the-child")
            p.start()
            print("got", q.get())
            p.join()
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                print("squared", pool.submit(square, 7).result())
            procscope.shutdown()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["multiprocessing False", "got 41", "squared 49"]
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM spans ORDER BY start_ns")]
    assert "put q@app.py:17" in names and "get q@app.py:17" in names, names
    assert {"spawn the-child", "process the-child", "exit the-child"} <= set(names), names
    assert "pool_task __main__.square" in names, names
