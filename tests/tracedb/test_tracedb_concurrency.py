"""Several processes writing one DB at once; a writer killed mid-batch; readers beside writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from opentelemetry.sdk.trace.export import SpanExportResult

from procscope.exporters.tracedb import TraceDB, TraceDBSpanExporter

PROCESSES = 8
SPANS_EACH = 20_000
BATCH = 1_000


def _writer(path: str, seed: int, build_traces, results) -> None:
    # Spans are built before the clock matters: the processes then contend on the DB.
    spans = build_traces(SPANS_EACH // 4, 4, seed=seed, name=f"p{seed}")
    exporter = TraceDBSpanExporter(path, timeout=60)
    outcomes = [exporter.export(spans[i : i + BATCH]) for i in range(0, len(spans), BATCH)]
    exporter.shutdown()
    results.put((seed, [o.name for o in outcomes]))


def test_eight_processes_write_exactly_160000_spans(db_path, make_traces):
    """8 processes x 20,000 spans into one file: exactly 160,000 spans and no failed batch."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_writer, args=(db_path, seed, make_traces, results))
        for seed in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=240) for _ in workers)
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert all(set(o) == {"SUCCESS"} for o in outcomes.values()), outcomes
    with TraceDB(db_path) as db:
        assert db.span_count() == PROCESSES * SPANS_EACH
        pids = {w.pid for w in workers}
        counted = db.conn.execute("SELECT pid, count(*) FROM spans GROUP BY pid").fetchall()
    assert dict(counted) == {pid: SPANS_EACH for pid in pids}
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 160_000
    assert conn.execute("SELECT count(DISTINCT span_pk) FROM spans").fetchone()[0] == 160_000
    assert conn.execute("SELECT count(*) FROM traces").fetchone()[0] == 40_000
    conn.close()


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags
    from procscope.exporters.tracedb import TraceDBSpanExporter

    path, batch_size = sys.argv[1], int(sys.argv[2])
    exporter = TraceDBSpanExporter(path)
    resource = Resource.create({"service.name": "killed"})
    n = 0
    while True:
        n += 1
        spans = [
            ReadableSpan(
                name=f"batch {n}",
                context=SpanContext(n, i + 1, is_remote=False, trace_flags=TraceFlags(1)),
                attributes={"i": i, "pad": "x" * 200},
                resource=resource,
                start_time=n * 10**9 + i,
                end_time=n * 10**9 + i + 1,
            )
            for i in range(batch_size)
        ]
        print("exporting", n, flush=True)
        assert exporter.export(spans).name == "SUCCESS"
        print("committed", n, flush=True)  # only after the commit returned
    """
)


def test_writer_killed_mid_batch_leaves_every_committed_span(db_path, tmp_path):
    """SIGKILL in the middle of a batch: the DB opens and holds every committed batch, whole."""
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    batch_size = 5_000
    proc = subprocess.Popen(
        [sys.executable, str(script), db_path, str(batch_size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    committed: list[int] = []
    export_times = []
    while len(committed) < 4:
        assert proc.stdout.readline().split()[0] == "exporting"
        started = time.monotonic()
        what, n = proc.stdout.readline().split()
        assert what == "committed"
        export_times.append(time.monotonic() - started)
        committed.append(int(n))
    # Kill half way through the next export() (its insert and commit), as timed above.
    assert proc.stdout.readline().split() == ["exporting", "5"]
    time.sleep(sorted(export_times)[1] / 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    # If it finished that batch before the signal landed, the batch is committed too.
    committed += [int(n) for what, n in _pairs(proc.stdout.read().split()) if what == "committed"]
    proc.stdout.close()
    assert os.path.exists(db_path + "-wal")  # it died without a clean close
    with TraceDB(db_path) as db:
        rows = db.conn.execute("SELECT name, count(*) FROM spans GROUP BY name").fetchall()
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = dict(rows)
    for n in committed:
        assert counts.pop(f"batch {n}") == batch_size
    # At most the batch in flight may have landed as well, and then whole.
    assert all(count == batch_size for count in counts.values()), counts
    assert len(counts) <= 1


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    return list(zip(words[::2], words[1::2]))


def _reader(path: str, stop, results) -> None:
    seen = []
    with TraceDB(path) as db:
        while not stop.is_set():
            seen.append(db.span_count())
            db.traces(limit=20)
    results.put(seen)


def test_readers_run_beside_writers(db_path, make_traces):
    """A TraceDB queried in a loop while two processes write sees only growing, whole batches."""
    seed_exporter = TraceDBSpanExporter(db_path)
    assert seed_exporter.export(make_traces(1, 4, seed=99)) is SpanExportResult.SUCCESS
    seed_exporter.shutdown()
    ctx = multiprocessing.get_context("fork")
    stop, results, writer_results = ctx.Event(), ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(db_path, stop, results))
    reader.start()
    writers = [
        ctx.Process(target=_writer, args=(db_path, seed, make_traces, writer_results))
        for seed in (1, 2)
    ]
    for writer in writers:
        writer.start()
    for _ in writers:
        _seed, outcomes = writer_results.get(timeout=120)
        assert set(outcomes) == {"SUCCESS"}
    stop.set()
    seen = results.get(timeout=60)
    reader.join(30)
    for writer in writers:
        writer.join(30)
    assert seen == sorted(seen)
    assert all((count - 4) % BATCH == 0 for count in seen)
    assert seen[-1] <= 4 + 2 * SPANS_EACH


def test_threads_sharing_one_exporter_and_using_their_own(db_path, make_traces):
    """4 threads on one shared exporter and 4 with exporters of their own: every span lands."""
    import threading

    shared = TraceDBSpanExporter(db_path, timeout=30)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(seed: int, exporter: TraceDBSpanExporter) -> None:
        spans = make_traces(250, 4, seed=seed, name=f"t{seed}")
        results = [exporter.export(spans[i : i + 100]).name for i in range(0, 1000, 100)]
        with lock:
            outcomes.extend(results)

    own = [TraceDBSpanExporter(db_path, timeout=30) for _ in range(4)]
    threads = [threading.Thread(target=run, args=(seed, shared)) for seed in range(4)]
    threads += [threading.Thread(target=run, args=(4 + i, own[i])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for exporter in [shared, *own]:
        exporter.shutdown()
    assert outcomes == ["SUCCESS"] * 80
    with TraceDB(db_path) as db:
        assert db.span_count() == 8000
        assert len(db.traces(limit=None)) == 2000


def _first_writer(path: str, seed: int, barrier, build_traces, results) -> None:
    spans = build_traces(5, 2, seed=seed)
    exporter = TraceDBSpanExporter(path, timeout=30)
    barrier.wait()
    outcome = exporter.export(spans).name
    exporter.shutdown()
    results.put(outcome)


def test_processes_racing_to_create_the_db_all_succeed(tmp_path, make_traces):
    """8 processes exporting at the same instant into a DB that does not exist yet: the file
    is created once, with the schema, and every first batch lands (no "not procscope's")."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = str(tmp_path / f"race{attempt}.db")
        barrier, results = ctx.Barrier(8), ctx.Queue()
        workers = [
            ctx.Process(target=_first_writer, args=(path, s, barrier, make_traces, results))
            for s in range(8)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(30)
        assert outcomes == ["SUCCESS"] * 8, (attempt, outcomes)
        with TraceDB(path) as db:
            assert db.span_count() == 80


def _descriptors_on(path: str) -> list[str]:
    """This process's open descriptors on the DB, its -wal or its -shm."""
    names = {path, path + "-wal", path + "-shm"}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in names:
                found.append(fd)
        except OSError:
            pass  # the listing's own descriptor
    return found


def test_exporters_set_up_at_once_in_threads_leave_no_descriptor_open(db_path, make_traces):
    """Four exporters set up at the same moment in four threads each note only the
    descriptors SQLite opened for their own connection. Noting another's (it appeared
    during the open), a writer set its connection aside once that other one closed:
    never closed again, its descriptors open for the rest of the process."""
    import threading

    barrier = threading.Barrier(4)
    exporters: list[TraceDBSpanExporter] = []

    def set_up() -> None:
        barrier.wait()
        exporters.append(TraceDBSpanExporter(db_path, timeout=30))

    threads = [threading.Thread(target=set_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(exporters) == 4
    for exporter in exporters:
        exporter.shutdown()
        exporters_left = [e for e in exporters if not e._stopped]
        for other in exporters_left:  # each export checks its writer's descriptors
            assert other.export(make_traces(1)) is SpanExportResult.SUCCESS
    assert _descriptors_on(db_path) == []
    with TraceDB(db_path) as db:
        assert db.span_count() == 4 * (3 + 2 + 1)
