"""Tools about who ran and who talked: list_runs, process_tree, messages."""

from __future__ import annotations

from typing import Any

from ._reader import Reader
from ._shape import clip, compact, iso, left_out, ms
from ._spec import RUN, SINCE, UNTIL, Param, Tool, limit_param
from ._when import time_range

MAX_RUNS = 50
MAX_PROCESSES = 300
MAX_MESSAGES = 200
DEFAULT_MESSAGES = 50
# A messages call with from/to walks every message of the run until its page is full:
# one that matches few of very many is stopped here, with advice.
MESSAGES_SECONDS = 0.9


def list_runs(reader: Reader) -> dict[str, Any]:
    db = reader.db()
    runs = db.runs()[::-1]  # newest first
    items = [
        {
            "run_id": run.run_id,
            "command": clip(run.command),
            "start": iso(run.start_ns),
            "end": iso(run.end_ns),
            "duration_ms": ms(run.duration_ns),
            "processes": run.processes,
            "spans": run.span_count,
            "error_spans": run.errors,
            "exit_code": run.exit_code,
            "exit_signal": run.exit_signal,
            "complete": run.complete,
            "lost_spans": run.lost,
        }
        for run in runs[:MAX_RUNS]
    ]
    data: dict[str, Any] = {
        "latest_run": runs[0].run_id if runs else None,
        "runs": items,
        "note": "every other tool reads the latest run unless given run=<run_id> or run='all'",
    }
    left_out(data, "runs", len(runs), "older runs: query('SELECT * FROM runs ORDER BY start_ns')")
    return data


def _ending(record: Any) -> str:
    if record.exit_signal is not None:
        return f"killed by signal {record.exit_signal}"
    if record.exit_code is not None:
        return f"exit {record.exit_code}"
    return "no end recorded (still running, or its end was not exported)"


def process_tree(reader: Reader, run: str | None) -> dict[str, Any]:
    run_id = reader.run(run)
    db = reader.db()
    with reader.deadline():
        records = db.processes(run=run_id)
    items = [
        compact(
            {
                "pid": r.pid,
                "parent_pid": r.parent_pid,
                "name": r.name,
                "depth": r.depth,
                "kind": r.kind,
                "start_method": r.start_method,
                "target": r.target,
                "start": iso(r.start_ns),
                "lifetime_ms": ms(r.duration_ns),
                "ended": _ending(r),
                "error": r.error,
                "error_message": clip(r.error_message),
                "exit_reason": r.exit_reason,
                "trace_id": r.trace_id,
            }
        )
        for r in records[:MAX_PROCESSES]
    ]
    failed = [f"{r.name}:{r.pid}" for r in records if r.error]
    data: dict[str, Any] = {
        "run": run_id or "all",
        "processes": items,
        "summary": {
            "processes": len(records),
            "ended_badly": len(failed),
            "ended_badly_names": failed[:20],
            "without_recorded_end": sum(1 for r in records if not r.ended),
        },
        "order": "tree order: each process after its parent (depth 0 = a root), children "
        "by start; timeline(who='name:pid') tells one process's story",
    }
    left_out(data, "processes", len(records), "query() the spans table for the rest")
    return data


def _end(end: Any) -> str | None:
    return None if end is None else end.who()


def messages(
    reader: Reader,
    from_: str | None,
    to: str | None,
    queue: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    run: str | None,
) -> dict[str, Any]:
    run_id = reader.run(run)
    db = reader.db()
    start_ns, end_ns = time_range(since, until)
    wanted = limit or DEFAULT_MESSAGES
    advice = (
        "few messages match this from/to among many: give since/until, or use "
        "timeline(who=...) for everything one process sent and received"
    )
    with reader.deadline(MESSAGES_SECONDS if (from_ or to) else 5.0, advice=advice):
        found = db.messages(
            queue=queue,
            sender=from_,
            receiver=to,
            start_ns=start_ns,
            end_ns=end_ns,
            limit=wanted + 1,
            run=run_id,
        )
    items = [
        compact(
            {
                "message_id": m.message_id,
                "queue": m.queue,
                "from": _end(m.sender),
                "to": _end(m.receiver) or "(not received)",
                "sent": iso(m.sent_ns),
                "received": iso(m.received_ns),
                "wait_ms": ms(m.wait_ns),
                "size": m.size,
                "content": clip(m.content),
                "error": clip((m.sender and m.sender.error) or (m.receiver and m.receiver.error)),
                "trace_id": m.trace_id,
            }
        )
        for m in found[:wanted]
    ]
    data: dict[str, Any] = {"run": run_id or "all", "messages": items}
    if len(found) > wanted:
        last = found[wanted - 1].sent_ns
        left_out(
            data,
            "messages",
            None,
            f"the next page: the same call with since='{iso(last + 1)}'",
        )
    if not items and (from_ or to):
        data["note"] = (
            "no message matches; from/to take a process name, pid, name:pid or thread "
            f"name of the run. Processes: {_actor_names(reader, run_id)}"
        )
    elif not items:
        data["note"] = "no message matches (schema lists the queues: messaging.destination.name)"
    return data


def _actor_names(reader: Reader, run_id: str | None) -> str:
    names = sorted({f"{r.name}:{r.pid}" for r in reader.db().processes(run=run_id)})
    return ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")


TOOLS = (
    Tool(
        "list_runs",
        "The recorded runs of programs in this trace DB, newest first: run id, command, "
        "start, duration, process count, how the first process ended (exit code or "
        "signal), error spans, and whether the recording is complete. Call it first to "
        "see what is recorded; every other tool reads the latest run unless given "
        "run=<run_id> (or run='all').",
        list_runs,
    ),
    Tool(
        "process_tree",
        "Who spawned whom, and how each process ended: every process of a run in tree "
        "order with pid, parent pid, name, start method, start, lifetime, 'exit N' or "
        "'killed by signal N', and the error that ended it. Use it to see the shape of a "
        "program and which processes failed; then timeline(who) for one process's story, "
        f"find_errors for why. At most {MAX_PROCESSES} processes.",
        process_tree,
        (RUN,),
    ),
    Tool(
        "messages",
        "Messages sent between processes, threads and tasks (multiprocessing queues, "
        "pipes, queue.Queue, asyncio queues), oldest first: queue, sender and receiver "
        "(name:pid/thread), send and receive times, wait, size, content (cut to 300 "
        "characters) and trace id. '(not received)' is a message nobody took. Filter by "
        "sender (from), receiver (to), queue, time. For everything one actor did, "
        "timeline is better; get_trace(trace_id) follows one message's causes and effects."
        f" At most {MAX_MESSAGES} a call; the result says how to get the next page.",
        messages,
        (
            Param(
                "from",
                "string",
                "the sender: a process name, pid, name:pid or thread name; globs (worker-*) work",
            ),
            Param("to", "string", "the receiver (same forms as from)"),
            Param("queue", "string", "the queue or pipe name (globs work)"),
            SINCE,
            UNTIL,
            limit_param(DEFAULT_MESSAGES, MAX_MESSAGES, "messages"),
            RUN,
        ),
    ),
)
