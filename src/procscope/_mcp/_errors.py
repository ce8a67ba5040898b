"""find_errors: what went wrong in a run, and what led to it.

Three kinds of trouble, most severe first:

* processes that ended badly (an unhandled exception, a non-zero exit code, a signal),
  with the exception recorded on their ``process`` span;
* spans that ended with an error (a failed call, a task or thread that raised, a failed
  send), grouped by span name and exception (numbers in the message ignored), with a
  count, the first and last time, and one example;
* each item then gets the last few things its actor did before it (from the timeline),
  within a time budget; past it, the item says which timeline call gives them.

Error spans are found through the ``traces`` summaries (error counts per trace), so the
cost follows the number of failed traces, not the size of the DB.
"""

from __future__ import annotations

import re
import time
from typing import Any

from procscope.exporters.tracedb._actors import process_names

from ._reader import Reader
from ._shape import clip, clip_stack, iso, left_out
from ._spec import RUN, Param, Tool, ToolInputError
from ._tools_flow import _ending
from ._tools_spans import who
from ._tools_timeline import entries_of, entry_item

DEFAULT_ITEMS = 20
MAX_ITEMS = 100
BEFORE = 5  # timeline entries shown before each error
# The whole call's budget; the timelines before each item take what the rest left.
CALL_SECONDS = 0.9
# What is kept of it for the timelines, when the failed traces take long to read.
READ_SHARE = 0.4
# A run with more failed traces than this is summarised from the first ones.
MAX_TRACES = 2_000
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-f]{8,}\b|\d+")
_LIFECYCLE_ENDS = ("run", "reap", "end")


def _exception(span: Any) -> dict[str, Any] | None:
    for event in span.events:
        if event.name == "exception":
            attrs = event.attributes
            return {
                "type": attrs.get("exception.type"),
                "message": clip(attrs.get("exception.message")),
                "stack": clip_stack(attrs.get("exception.stacktrace")),
                "time_ns": event.time_ns,
            }
    return None


def _is_process_end(span: Any) -> bool:
    attrs = span.attributes
    return (
        attrs.get("procscope.lifecycle.kind") in ("process", "subprocess", "program")
        and attrs.get("procscope.lifecycle.role") in _LIFECYCLE_ENDS
    )


def _crash(reader: Reader, record: Any) -> dict[str, Any] | None:
    """The exception recorded on the process's own span, if any."""
    if not (record.trace_id and record.run_span_id):
        return None
    for span in reader.db().spans(trace_id=record.trace_id, errors_only=True):
        if span.span_id == record.run_span_id:
            return _exception(span)
    return None


def _process_ends(reader: Reader, records: list[Any]) -> list[dict[str, Any]]:
    items = []
    for record in records:
        if not record.error:
            continue
        item: dict[str, Any] = {
            "kind": "process ended badly",
            "who": f"{record.name}:{record.pid}",
            "time": iso(record.end_ns),
            "ended": _ending(record),
            "message": clip(record.error_message),
            "trace_id": record.trace_id,
        }
        exception = _crash(reader, record)
        if exception:
            item["exception"] = exception
        item["_ns"] = (exception or {}).get("time_ns") or record.end_ns or 0
        items.append(item)
    return items


def _error_spans(reader: Reader, run_id: str | None, stop_at: float) -> tuple[list[Any], int, int]:
    """The error spans of the run's failed traces, read until ``stop_at``: (spans, failed
    traces, traces read)."""
    db = reader.db()
    failed = db.traces(errors_only=True, run=run_id, limit=MAX_TRACES + 1)
    spans: list[Any] = []
    read = 0
    for summary in failed[:MAX_TRACES]:
        if time.monotonic() > stop_at:
            break
        spans.extend(db.spans(trace_id=summary.trace_id, errors_only=True))
        read += 1
    return spans, len(failed), read


def _groups(spans: list[Any], names: dict[int, str]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        exception = _exception(span)
        kind = (exception or {}).get("type") or ""
        message = (exception or {}).get("message") or span.status_description or ""
        key = (span.name, str(kind), _NUMBER.sub("N", str(message)))
        group = groups.get(key)
        if group is None:
            groups[key] = {
                "kind": "error span",
                "span": span.name,
                "error": clip(span.status_description) or "ERROR",
                "exception": exception,
                "count": 1,
                "who": who(span, names),
                "time": iso(span.end_ns),
                "last_time": iso(span.end_ns),
                "actors": {who(span, names).split("/")[0]},
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "_ns": (exception or {}).get("time_ns") or span.end_ns,
            }
        else:
            group["count"] += 1
            group["last_time"] = iso(span.end_ns)
            group["actors"].add(who(span, names).split("/")[0])
    out = []
    for group in groups.values():
        actors = sorted(group.pop("actors"))
        group["processes"] = len(actors)
        group["some_processes"] = actors[:5]
        out.append(group)
    return out


def _add_context(
    reader: Reader, run_id: str | None, items: list[dict[str, Any]], stop_at: float
) -> None:
    for item in items:
        at = item["_ns"]
        hint = f"timeline(who='{item['who']}', around='{iso(at)}')"
        if time.monotonic() >= stop_at:
            item["before_it"] = f"not fetched (time limit): {hint}"
            continue
        try:
            with reader.deadline(max(0.05, stop_at - time.monotonic())):
                entries = entries_of(reader, item["who"], run_id, at, None)
        except ToolInputError:
            item["before_it"] = f"not fetched (time limit): {hint}"
            continue
        before = [e for e in entries if e.time_ns <= at][-BEFORE:]
        item["before_it"] = [entry_item(e, item["who"]) for e in before]
        item["more_context"] = hint


def find_errors(reader: Reader, run: str | None, limit: int | None) -> dict[str, Any]:
    stop_at = time.monotonic() + CALL_SECONDS
    run_id = reader.run(run)
    wanted = limit or DEFAULT_ITEMS
    with reader.deadline(advice="find_errors reads every failed trace of the run"):
        records = reader.db().processes(run=run_id)
        ends = _process_ends(reader, records)
        spans, failed_traces, read = _error_spans(reader, run_id, stop_at - READ_SHARE)
    names = process_names(records)
    groups = _groups([s for s in spans if not _is_process_end(s)], names)
    ends.sort(key=lambda i: i["_ns"])
    groups.sort(key=lambda g: (-g["count"], g["_ns"]))
    items = (ends + groups)[:wanted]
    _add_context(reader, run_id, items, stop_at)
    for item in items:
        item.pop("_ns", None)
        if item.get("exception"):
            item["exception"].pop("time_ns", None)
    data: dict[str, Any] = {
        "run": run_id or "all",
        "summary": {
            "processes_ended_badly": len(ends),
            "error_spans": len(spans),
            "error_span_groups": len(groups),
            "failed_traces": failed_traces,
        },
        "errors": items,
        "order": "processes that ended badly (by time), then error spans grouped by name "
        "and exception (most frequent first); before_it: the actor's last entries before it",
    }
    if read < failed_traces:
        data["summary"]["note"] = (
            f"the error spans of the first {read} failed traces only (time and size limits); "
            "counts are of those"
        )
    left_out(data, "errors", len(ends) + len(groups), "a larger limit")
    if not items:
        data["note"] = "nothing went wrong in this run (no error span, no bad exit); run='all'?"
    return data


TOOLS = (
    Tool(
        "find_errors",
        "What went wrong in a run and what led to it: processes that crashed or ended with "
        "a non-zero exit code or a signal, and spans that ended in an error (exceptions "
        "with type, message and stack), grouped by kind with counts, each with the last "
        f"{BEFORE} things its process/thread/task did before it. Start here for 'why did it "
        "crash' or 'what failed'; then timeline or get_trace for one item.",
        find_errors,
        (
            RUN,
            Param(
                "limit",
                "integer",
                f"how many items at most (default {DEFAULT_ITEMS})",
                minimum=1,
                maximum=MAX_ITEMS,
            ),
        ),
    ),
)
