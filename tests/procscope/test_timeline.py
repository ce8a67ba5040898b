"""`procscope timeline WHO` and one name per actor, on a crawler-like program run once
under `procscope run`: a thread pool, a process pool, two downloader processes (one
crashes on a URL it cannot parse), a SIGKILLed worker, asyncio tasks passing messages,
a subprocess and a traced object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procscope.exporters.tracedb import TraceDB

from .conftest import BIN, clean_environ

CRAWLER = """
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import procscope


class Frontier:
    def __init__(self):
        self.seen = 0
        self.status = "idle"


def size(url):
    return len(url)


def downloader(urls, results):
    while True:
        url = urls.get()
        if url is None:
            return
        if "bad" in url:
            raise RuntimeError("cannot parse " + url)
        results.put((url, len(url)))


def sleeper(ready):
    ready.put("up")
    time.sleep(60)


async def fetch_all():
    queue = asyncio.Queue()

    async def fetcher():
        while True:
            await queue.get()
            queue.task_done()

    tasks = [asyncio.create_task(fetcher(), name=f"fetcher-{i}") for i in range(2)]

    async def feed():
        for i in range(4):
            await queue.put(f"https://async/{i}")
        await queue.join()

    await asyncio.create_task(feed(), name="feeder")
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    frontier = procscope.trace_state(Frontier(), name="frontier")
    urls = procscope.name(mp.Queue(), "urls")
    results = procscope.name(mp.Queue(), "results")
    workers = [
        mp.Process(target=downloader, args=(urls, results), name=f"downloader-{i}")
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for url in ("https://ok/1", "https://ok/2", "https://bad/3", "https://ok/4"):
        urls.put(url)
        frontier.seen += 1
    frontier.status = "crawling"
    for _ in range(3):
        results.get()
    for _ in workers:
        urls.put(None)
    for worker in workers:
        worker.join()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(size, ["a", "bb"]))
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(size, ["a", "bb"]))
    ready = mp.Queue()
    victim = mp.Process(target=sleeper, args=(ready,), name="victim")
    victim.start()
    ready.get()
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    asyncio.run(fetch_all())
    subprocess.run([sys.executable, "-c", "print('report')"], check=True)
    # Two more processes under one name: WHO "twin" is ambiguous.
    for _ in range(2):
        twin = mp.Process(target=size, args=("x",), name="twin")
        twin.start()
        twin.join()
    frontier.status = "done"
"""


@pytest.fixture(scope="module")
def crawl_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The crawler recorded once by `procscope run` at default settings."""
    db, stderr = _record(tmp_path_factory.mktemp("crawler"), CRAWLER)
    assert "cannot parse https://bad/3" in stderr  # the downloader's own traceback
    return db


def _record(folder: Path, program: str, *args: str) -> tuple[str, str]:
    """Run ``program`` under `procscope run` in ``folder``: (the DB, its stderr)."""
    (folder / "app.py").write_text(program)
    db = str(folder / "app.db")
    done = subprocess.run(
        [str(BIN / "procscope"), "run", "--db", db, "--", sys.executable, "app.py", *args],
        cwd=folder,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return db, done.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "procscope"), *args],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _crashed(db: str) -> Any:
    with TraceDB(db) as reader:
        (crashed,) = [p for p in reader.processes(run=reader.latest_run_id()) if p.exit_code == 1]
    return crashed


def test_timeline_of_the_crashed_worker_says_what_it_did_before_it_crashed(crawl_db: str) -> None:
    """One command answers "what did the failing downloader do before it crashed": who
    started it, each URL it took (with the sender), the exception with its stack, and its
    end, in time order; --last and --json say the same."""
    crashed = _crashed(crawl_db)
    done = _cli("timeline", crashed.name, "--db", crawl_db, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["actor"] == f"{crashed.name}:{crashed.pid}"
    entries = data["entries"]
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "started" and kinds[-1] == "ended"
    assert [e["time_ns"] for e in entries] == sorted(e["time_ns"] for e in entries)
    parent = entries[0]["peer"]
    assert parent.startswith("app:") and "target __main__.downloader" in entries[0]["text"]
    received = [e for e in entries if e["kind"] == "received"]
    assert received and received[-1]["content"] == "https://bad/3"  # the text, typed
    assert all(e["queue"] == "urls" and e["peer"] == parent for e in received)
    (exception,) = [e for e in entries if e["kind"] == "exception"]
    assert exception["text"] == "RuntimeError: cannot parse https://bad/3"
    assert 'raise RuntimeError("cannot parse " + url)' in exception["stack"]
    assert kinds.index("exception") > kinds.index("received")
    assert entries[-1]["text"].startswith("exited with code 1") and entries[-1]["error"]

    text = _cli("timeline", f"{crashed.name}:{crashed.pid}", "--db", crawl_db, "--last", "3")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"timeline of {crashed.name}:{crashed.pid} (run {data['run']})"
    assert "received" in text.stdout and "https://bad/3" in text.stdout
    assert "RuntimeError: cannot parse https://bad/3" in text.stdout
    assert "exited with code 1" in lines[-2]
    assert lines[-1].startswith("(the last 3 entries shown, earlier ones left out;")
    assert "started by" not in text.stdout  # --last 3: the start is left out
    # The stack is the program's: procscope's own wrapper frame is left out of the text.
    assert "in downloader" in text.stdout and "run_and_watch" not in text.stdout


def test_timeline_around_a_time_and_of_the_killed_worker(crawl_db: str) -> None:
    """The SIGKILLed worker's timeline ends with the signal its parent saw; --around
    keeps only what happened within 2 s of a time."""
    with TraceDB(crawl_db) as reader:
        victim = reader.timeline("victim")
        assert victim[-1].kind == "ended" and "SIGKILL" in victim[-1].text
        assert victim[0].kind == "started"
        whole = reader.timeline("app")
        # 2 s before the middle of the program's life: the first half of its entries.
        at = (whole[0].time_ns + whole[-1].time_ns) // 2 - 2 * 10**9
        early = reader.timeline("app", around=at)
    assert early == [e for e in whole if abs(e.time_ns - at) <= 2 * 10**9]
    assert 0 < len(early) < len(whole) and early[0].kind == "started"


def test_asyncio_tasks_are_actors_of_their_own(crawl_db: str) -> None:
    """Messages between asyncio tasks show distinct ends (process:pid/task) in
    `messages`, and a task's timeline holds the messages it took."""
    done = _cli("messages", "--db", crawl_db, "--json", "--from", "*/feeder")
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout)
    assert len(messages) == 4
    for message in messages:
        assert message["sender"]["actor"].endswith("/feeder")
        assert message["receiver"]["actor"].split("/")[-1] in ("fetcher-0", "fetcher-1")
        assert (
            message["sender"]["actor"].split("/")[0] == message["receiver"]["actor"].split("/")[0]
        )
    taker = messages[0]["receiver"]["actor"]
    with TraceDB(crawl_db) as reader:
        entries = reader.timeline(taker)
    got = [e for e in entries if e.kind == "received"]
    assert got and all(e.peer == messages[0]["sender"]["actor"] for e in got)
    assert {e.content for e in got} <= {f"'https://async/{i}'" for i in range(4)}


def test_one_name_per_process_in_every_command(crawl_db: str) -> None:
    """The subprocess and the program are called the same in processes, messages, show
    and timeline (name:pid), and an ambiguous WHO exits 2 listing the candidates."""
    processes = json.loads(_cli("processes", "--db", crawl_db, "--json").stdout)
    actors = {p["pid"]: p["actor"] for p in processes}
    (sub,) = [p for p in processes if p["kind"] == "subprocess"]
    assert actors[sub["pid"]] == f"{sub['name']}:{sub['pid']}"
    with TraceDB(crawl_db) as reader:
        assert reader.actor(str(sub["pid"])) == actors[sub["pid"]]
        messages = reader.messages(queue="urls")
        trace = reader.trace(messages[0].trace_id)
    assert {m.sender.who() for m in messages if m.sender} == {actors[processes[0]["pid"]]}
    assert trace is not None
    shown = _cli("show", trace.summary.trace_id, "--db", crawl_db, "--json")
    assert shown.returncode == 0, shown.stderr

    def walk(node: dict[str, Any]) -> list[str]:
        return [node["actor"], *(a for child in node["children"] for a in walk(child))]

    show_actors = {a for root in json.loads(shown.stdout)["roots"] for a in walk(root)}
    # A span run by a thread or task is named name:pid/Thread-1 or name:pid/Task-1: its
    # process part is the process's one name (which spans the trace holds varies by run).
    assert {a.split("/", 1)[0] for a in show_actors} <= set(actors.values())
    ambiguous = _cli("timeline", "twin", "--db", crawl_db)
    assert ambiguous.returncode == 2
    twins = sorted(a for a in actors.values() if a.startswith("twin:"))
    assert len(twins) == 2 and ambiguous.stderr.count("\n") == 1
    assert all(t in ambiguous.stderr for t in twins)
    assert _cli("timeline", "nobody", "--db", crawl_db).returncode == 2


def test_traces_lists_stories_and_counts_one_span_fragments_by_name(crawl_db: str) -> None:
    """`procscope traces` lists traces of several spans (and any with an error), and sums
    up the one-span ones by root name in one line; --all lists them all, and --json
    gives the groups under "fragments"."""
    everything = json.loads(
        _cli("traces", "--db", crawl_db, "--all", "--json", "--limit", "1000").stdout
    )["traces"]
    data = json.loads(_cli("traces", "--db", crawl_db, "--json", "--limit", "1000").stdout)
    stories, fragments = data["traces"], data["fragments"]
    singles = [t for t in everything if t["span_count"] == 1 and not t["has_error"]]
    assert singles and stories
    # Every trace has its root recorded, the workers' messages included (default settings).
    assert all(t["root_name"] for t in everything)
    assert all(t["span_count"] > 1 or t["has_error"] for t in stories)
    assert len(stories) + len(singles) == len(everything)
    assert sum(f["count"] for f in fragments) == len(singles)
    counts: dict[str, int] = {}
    for single in singles:
        counts[single["root_name"]] = counts.get(single["root_name"], 0) + 1
    assert {f["root_name"]: f["count"] for f in fragments} == counts
    text = _cli("traces", "--db", crawl_db, "--limit", "1000").stdout.splitlines()
    assert text[-1].startswith(f"and {len(singles)} one-span traces, not listed: ")
    assert "Frontier.__setattr__ (" in text[-1]
    assert len(text) == 1 + len(stories) + 1  # header, stories, the fragments line


_KILLED = """
import multiprocessing as mp
import os
import signal
import sys
import time

from opentelemetry import trace


def worker(out):
    out.put("hello from the worker")
    trace.get_tracer_provider().force_flush()  # its message is stored before it dies
    open("flushed", "w").close()
    time.sleep(60)


if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    out = ctx.Queue()
    child = ctx.Process(target=worker, args=(out,), name="doomed")
    child.start()
    out.get()
    while not os.path.exists("flushed"):
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_killed_workers_spans_keep_a_recorded_parent(tmp_path: Path, method: str) -> None:
    """A worker SIGKILLed after it exported a message never ends its own process span:
    its parent records it at the reap, under the id the worker gave it, so the message
    hangs under 'process doomed' in the trace (no orphan) and processes shows it once."""
    db, _stderr = _record(tmp_path, _KILLED, method)
    with TraceDB(db) as reader:
        (sent,) = [m for m in reader.messages() if m.content == "'hello from the worker'"]
        tree = reader.trace(sent.trace_id)
        assert tree is not None
        by_id = {s.span_id: s for s in tree.spans}
        send = by_id[sent.sender.span_id]
        parent = by_id[send.parent_span_id]
        assert parent.name == "process doomed" and parent.is_error
        assert parent.attributes["procscope.lifecycle.recorded_by"] == "parent"
        assert parent.attributes["procscope.process.exit.signal"] == 9
        assert [r.span.name for r in tree.roots] == ["spawn doomed"]
        (doomed,) = [p for p in reader.processes() if p.name == "doomed"]
        assert doomed.exit_signal == 9 and doomed.run_span_id == parent.span_id
