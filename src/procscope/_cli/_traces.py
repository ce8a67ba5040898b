"""``procscope traces`` (list traces) and ``procscope show TRACE_ID`` (one trace as a tree)."""

from __future__ import annotations

import argparse
import fnmatch
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from procscope.exporters.tracedb import span_actor

from ._losses import as_json, describe, recorded_losses
from ._output import (
    EXIT_OK,
    Kept,
    add_db_arguments,
    db_command,
    fail,
    format_duration,
    format_time,
    iso_time,
    left_out_note,
    parse_attribute,
    parse_duration,
    pid_argument,
    positive_int_argument,
    print_json,
    prune_tree,
    render_table,
    render_tree,
    time_argument,
)

if TYPE_CHECKING:
    from procscope.exporters.tracedb import SpanNode, TraceDB, TraceSummary

ERROR_MARK = "✗"
SHOW_LIMIT = 1000  # spans `show` prints by default (it says how many it left out)


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _attribute(text: str) -> tuple[str, Any]:
    try:
        return parse_attribute(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _summary_json(summary: TraceSummary) -> dict[str, Any]:
    data = summary.to_dict()
    data["start"] = iso_time(summary.start_ns)
    return data


# ---------------------------------------------------------------------------- traces


@db_command("traces")
def cmd_traces(args: argparse.Namespace, db: TraceDB) -> int:
    if getattr(args, "recordings", False):
        from ._recordings import list_recordings

        return list_recordings(args, db)
    # Stories, not fragments: one-span traces without an error (a state change or a
    # message outside any span of the program's) are summed up by name below the table,
    # unless --all, or a --name/--attr that asks for them.
    grouped = not (args.all or args.name or args.attr)
    summaries = db.traces(
        start_ns=args.since,
        end_ns=args.until,
        name=args.name,
        errors_only=args.errors,
        min_duration_ns=args.min_duration,
        attributes=dict(args.attr or []),
        limit=args.limit,
        run=args.run_id,
        min_spans=2 if grouped else None,
    )
    fragments = []
    if grouped and not args.errors and args.min_duration is None:
        fragments = db.trace_fragments(start_ns=args.since, end_ns=args.until, run=args.run_id)
    lost = recorded_losses(db, args.run_id)
    if args.json:
        return print_json(
            {
                "traces": [_summary_json(s) for s in summaries],
                "fragments": [f.to_dict() for f in fragments],
                "recording": as_json(lost),
            }
        )
    if not summaries:
        print("no traces match" if _filtered(args) else f"no traces in {db.path}")
        if fragments:
            print(_fragments_line(fragments))
        if lost:
            print(describe(lost))
        return EXIT_OK
    # Times of day only, when every trace is from today: the full trace id then fits
    # an 80-column terminal.
    today = format_time(time.time_ns())[:10]
    with_date = any(format_time(s.start_ns)[:10] != today for s in summaries)
    rows = [
        [
            s.trace_id,
            s.root_name or "(root not recorded)",
            format_time(s.start_ns, date=with_date),
            format_duration(s.duration_ns),
            s.span_count,
            f"{ERROR_MARK} {s.error_count}" if s.has_error else "",
        ]
        for s in summaries
    ]
    print(
        render_table(
            ["TRACE ID", "ROOT", "START", "DURATION", "SPANS", "ERRORS"],
            rows,
            right=(3, 4),
            shrink=(1, 0),
        )
    )
    if len(summaries) == args.limit:
        print(f"(the {args.limit} newest shown; --limit N for more)")
    if fragments:
        print(_fragments_line(fragments))
    if lost:
        print(describe(lost))
    return EXIT_OK


_FRAGMENT_NAMES = 5  # root names the fragments line names; the rest are counted


def _fragments_line(fragments: list[Any]) -> str:
    """``and 1,204 one-span traces, not listed: Frontier.record (1,000), put urls (204)
    (--all lists them)``."""
    total = sum(f.count for f in fragments)
    shown = fragments if len(fragments) <= _FRAGMENT_NAMES + 1 else fragments[:_FRAGMENT_NAMES]
    named = [f"{f.root_name or '(root not recorded)'} ({f.count:,})" for f in shown]
    rest = fragments[len(shown) :]
    if rest:
        named.append(f"{len(rest)} other names ({sum(f.count for f in rest):,})")
    noun = "trace" if total == 1 else "traces"
    return (
        f"and {total:,} one-span {noun}, not listed: {', '.join(named)} "
        "(--all lists them)"
    )


def _filtered(args: argparse.Namespace) -> bool:
    return any((args.since, args.until, args.name, args.errors, args.min_duration, args.attr))


# ---------------------------------------------------------------------------- show


def _attrs_text(attributes: dict[str, Any]) -> str:
    return " ".join(
        f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
        for key, value in attributes.items()
    )


@db_command("show")
def cmd_show(args: argparse.Namespace, db: TraceDB) -> int:
    wanted = args.trace_id.strip().lower()
    if len(wanted) != 32:
        found = db.find_trace_ids(wanted)
        if len(found) != 1:
            reason = "matches several traces" if found else "matches no trace"
            return fail("show", f"{args.trace_id!r} {reason} in {db.path}")
        wanted = found[0]
    try:
        # A trace id names one trace whatever its run: --run only when given.
        tree = db.trace(wanted, run=args.run_id if args.run is not None else None)
    except ValueError as exc:
        return fail("show", str(exc))
    if tree is None:
        return fail("show", f"no trace {wanted} in {db.path}")
    # Each span's process, thread or task by its one name (as messages and timeline say).
    names = db.process_names(run=args.run_id if args.run is not None else None)
    # --json has the whole trace unless asked otherwise; the text is bounded by default.
    limit = args.limit if args.limit is not None or args.json else SHOW_LIMIT
    kept, shown, total = prune_tree(
        tree.roots,
        lambda node: node.children,
        match=_span_filter(args),
        max_depth=args.depth,
        limit=limit,
    )
    if args.json:
        data = tree.summary.to_dict()
        data["start"] = iso_time(tree.summary.start_ns)
        data["roots"], data["subtrees_moved_to_roots"] = _kept_json(kept, names)
        data["spans_shown"], data["spans_left_out"] = shown, total - shown
        return print_json(data)
    summary = tree.summary
    errors = f", {ERROR_MARK} {summary.error_count} error(s)" if summary.has_error else ""
    print(
        f"trace {summary.trace_id}: {summary.root_name or '(root not recorded)'}, "
        f"{summary.span_count} span(s){errors}, {format_duration(summary.duration_ns)}, "
        f"started {format_time(summary.start_ns)}"
    )
    origin = summary.start_ns
    show_attributes = args.attributes

    def label(node: SpanNode) -> list[str]:
        span = node.span
        parts = [span.name]
        if span.kind != "INTERNAL":
            parts.append(f"[{span.kind.lower()}]")
        parts.append(format_duration(span.duration_ns))
        parts.append(f"@+{format_duration(span.start_ns - origin)}")
        parts.append(span_actor(span.pid, span.process_name, span.attributes, names))
        if span.is_error:
            parts.append(
                f"{ERROR_MARK} ERROR"
                + (f": {span.status_description}" if span.status_description else "")
            )
        lines = ["  ".join(parts)]
        if show_attributes and span.attributes:
            lines.append("  " + _attrs_text(span.attributes))
        for event in span.events:
            mark = f"{ERROR_MARK} " if event.name == "exception" else ""
            text = f"• {mark}{event.name} @+{format_duration(event.time_ns - origin)}"
            if event.attributes:
                text += "  " + _attrs_text(event.attributes)
            lines.append(text)
        return lines

    def kept_label(kept: Kept) -> list[str]:
        lines = label(kept.node)
        if kept.left_out:
            lines.append(f"… {kept.left_out:,} span(s) below not shown")
        return lines

    print(render_tree(kept, kept_label, lambda k: k.children, wrap_details=show_attributes))
    note = left_out_note(
        shown, total, "spans", "--limit N, --depth N, --pid PID, --name GLOB choose which"
    )
    if note:
        print(note)
    return EXIT_OK


def _span_filter(args: argparse.Namespace) -> Callable[[SpanNode], bool] | None:
    """The spans --pid and --name ask for (both when both are given), or None for all."""
    if args.pid is None and args.name is None:
        return None

    def wanted(node: SpanNode) -> bool:
        span = node.span
        if args.pid is not None and span.pid != args.pid:
            return False
        return args.name is None or fnmatch.fnmatchcase(span.name, args.name)

    return wanted


# JSON nests children in their parent; a chain of messages can nest spans thousands deep,
# deeper than a JSON encoder (or reader) recurses. A span this deep starts a new root
# (its parent_span_id says where it belongs).
JSON_NESTING = 200


def _kept_json(kept: list[Kept], names: dict[int, str]) -> tuple[list[dict[str, Any]], int]:
    """The kept tree as JSON data, and how many subtrees were moved up to be roots."""
    roots: list[dict[str, Any]] = []
    moved = 0
    stack: list[tuple[Kept, list[dict[str, Any]], int]] = [(k, roots, 1) for k in reversed(kept)]
    while stack:  # a loop, not recursion (see JSON_NESTING)
        node, siblings, depth = stack.pop()
        if depth > JSON_NESTING:
            siblings, depth, moved = roots, 1, moved + 1
        span = node.node.span
        data: dict[str, Any] = span.to_dict()
        data["actor"] = span_actor(span.pid, span.process_name, span.attributes, names)
        data["children"] = []
        data["left_out"] = node.left_out
        siblings.append(data)
        stack.extend((child, data["children"], depth + 1) for child in reversed(node.children))
    return roots, moved


# ---------------------------------------------------------------------------- parsers


def add_parser(subparsers: Any) -> None:
    traces = subparsers.add_parser(
        "traces",
        help="list traces: id, root name, start, duration, span count, errors",
        description="List the recorded traces, newest first. TIME is ISO 8601 (with or "
        "without a UTC offset; local time when without) or a time of day such as 12:03:05 "
        "(today, local).",
    )
    add_db_arguments(traces)
    traces.add_argument(
        "--since", type=time_argument, metavar="TIME", help="traces started at or after"
    )
    traces.add_argument("--until", type=time_argument, metavar="TIME", help="traces started before")
    traces.add_argument("--name", help="root span name (a glob such as 'worker*' allowed)")
    traces.add_argument("--errors", action="store_true", help="only traces with an error")
    traces.add_argument(
        "--all",
        action="store_true",
        help="list one-span traces too (by default they are counted by name below the table)",
    )
    traces.add_argument(
        "--min-duration", type=_duration, metavar="DUR", help="at least this long (250ms, 2s)"
    )
    traces.add_argument(
        "--attr",
        type=_attribute,
        action="append",
        metavar="KEY=VALUE",
        help="some span of the trace has this attribute value (repeatable)",
    )
    traces.add_argument(
        "--limit", type=positive_int_argument, default=50, metavar="N", help="at most N traces (50)"
    )
    traces.add_argument(
        "--recordings",
        action="store_true",
        help="only the flight recorder's dumps, with their reasons (docs/flight-recorder.md)",
    )
    traces.set_defaults(func=cmd_traces)

    show = subparsers.add_parser(
        "show",
        help="one trace as a tree, with events",
        description="Show one trace as a tree of spans with their events; errors are "
        f"marked {ERROR_MARK}. TRACE_ID may be shortened to a unique prefix. On a big "
        "trace, --depth, --pid, --name and --limit choose what to print, and the output "
        "says how many spans it left out.",
    )
    add_db_arguments(show)
    show.add_argument("trace_id", metavar="TRACE_ID")
    show.add_argument(
        "-a",
        "--attributes",
        action="store_true",
        help="also print every span's attributes (whole, wrapped on a terminal)",
    )
    show.add_argument(
        "--depth", type=positive_int_argument, metavar="N", help="only N levels (1: the roots)"
    )
    show.add_argument(
        "--pid", type=pid_argument, help="only spans of this process (and their parents)"
    )
    show.add_argument(
        "--name", metavar="GLOB", help="only spans so named, a glob (and their parents)"
    )
    show.add_argument(
        "--limit",
        type=positive_int_argument,
        metavar="N",
        help=f"at most N spans, in tree order (text: {SHOW_LIMIT}; --json: all)",
    )
    show.set_defaults(func=cmd_show)
