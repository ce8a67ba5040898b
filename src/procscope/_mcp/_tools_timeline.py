"""The timeline tool: everything that happened to one process, thread or task
(``TraceDB.timeline``, the query ``procscope timeline`` prints)."""

from __future__ import annotations

from typing import Any

from ._reader import Reader
from ._shape import clip, clip_stack, iso, left_out, ms
from ._spec import RUN, Param, Tool, ToolInputError
from ._when import instant

MAX_ENTRIES = 300
DEFAULT_LAST = 60


def entry_item(entry: Any, who: str | None = None) -> dict[str, Any]:
    """One timeline entry, compact: empty fields left out, and the actor when it is
    ``who`` (the one whose timeline it is)."""
    item: dict[str, Any] = {
        "time": iso(entry.time_ns),
        "kind": entry.kind,
        "text": clip(entry.text),
    }
    if entry.actor and entry.actor != who:
        item["actor"] = entry.actor
    for key in ("peer", "queue"):
        value = getattr(entry, key)
        if value:
            item[key] = value
    if entry.content:
        item["content"] = clip(entry.content, 200)
    if entry.error:
        item["error"] = True
    if entry.stack:
        item["stack"] = clip_stack(entry.stack)
    if entry.duration_ns is not None:
        item["duration_ms"] = ms(entry.duration_ns)
    if entry.trace_id:
        item["trace_id"] = entry.trace_id
    return item


def entries_of(reader: Reader, who: str, run_id: str | None, around_ns: int | None,
               last: int | None) -> list[Any]:  # fmt: skip
    """``TraceDB.timeline``, its unknown or ambiguous WHO as a tool error."""
    from procscope.exporters.tracedb import UnknownActorError

    try:
        return reader.db().timeline(who, run=run_id, around=around_ns, last=last)
    except UnknownActorError as exc:
        message = f"who: {exc}"
        if exc.candidates and exc.candidates[0] not in message:
            message += ". Pass one of: " + ", ".join(exc.candidates[:40])
        raise ToolInputError(message) from None


def timeline(
    reader: Reader, who: str, around: str | None, last: int | None, run: str | None
) -> dict[str, Any]:
    run_id = reader.run(run)
    around_ns = None if around is None else instant(around, "around")
    wanted = last if last is not None else (None if around_ns is not None else DEFAULT_LAST)
    with reader.deadline(advice="give around=<time> to read a few seconds of it"):
        entries = entries_of(reader, who, run_id, around_ns, wanted)
    actor = reader.db().actor(who, run=run_id)
    shown = entries[-MAX_ENTRIES:]
    data: dict[str, Any] = {
        "run": run_id or "all",
        "who": actor,
        "entries": [entry_item(e, actor) for e in shown],
        "order": "oldest first" + (f"; the last {wanted} entries" if wanted else ""),
    }
    if around_ns is not None:
        data["around"] = iso(around_ns)
    if shown and wanted is not None and len(entries) >= wanted:
        left_out(
            data,
            "entries",
            None,
            f"earlier entries: around='{iso(shown[0].time_ns)}' (2 s either side), "
            "or a larger last",
        )
    elif len(entries) > len(shown):
        left_out(data, "entries", len(entries), "a narrower around or a smaller last")
    return data


TOOLS = (
    Tool(
        "timeline",
        "Everything that happened to one process, thread or asyncio task, in time order: "
        "who started it, messages in and out (peer, queue, content), state changes, the "
        "spans it ran, exceptions with their stack, and how it ended (exit code or "
        "signal). The tool for 'what did X do before it crashed'. who is a name from "
        "process_tree or messages: name, pid, name:pid, name:pid/Thread-2 or "
        f"name:pid/Task-6. By default the last {DEFAULT_LAST} entries; around=<time> "
        f"gives 2 s either side of an instant. At most {MAX_ENTRIES} entries.",
        timeline,
        (
            Param(
                "who",
                "string",
                "the process, thread or task: name, pid, name:pid, "
                "name:pid/ThreadName or name:pid/Task-N",
                required=True,
            ),
            Param(
                "around",
                "string",
                "only entries within 2 s of this instant: ISO 8601 or a time of day (today, local)",
            ),
            Param(
                "last",
                "integer",
                f"only the last N entries (default {DEFAULT_LAST} without around)",
                minimum=1,
                maximum=MAX_ENTRIES,
            ),
            RUN,
        ),
    ),
)
