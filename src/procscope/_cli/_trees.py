"""Trees for the read commands: drawn with ├─ └─ │ (:func:`render_tree`), and the part of
a big one to show, with what was left out (:func:`prune_tree`, :func:`left_out_note`).
Loops, not recursion: a chain of messages can nest spans thousands deep.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._stdout import escape_controls, line_width, truncate

T = TypeVar("T")


def render_tree(
    roots: Sequence[T],
    label: Callable[[T], str | Sequence[str]],
    children: Callable[[T], Sequence[T]],
    *,
    width: int | None = None,
    wrap_details: bool = False,
) -> str:
    """A tree drawn with ├─ └─ │; ``label`` gives a node's line (or lines: the first
    is the node, the others are shown under it, e.g. its events). Lines are cut to
    ``width`` (by default :func:`line_width`); with ``wrap_details`` the lines under a
    node are wrapped instead, never cut. Control characters in labels are escaped."""
    width = line_width() if width is None else width
    out: list[str] = []
    # A loop, not recursion: a chain of messages can nest spans thousands deep.
    stack: list[tuple[T, str, str, str]] = [(root, "", "", "") for root in reversed(roots)]
    while stack:
        node, prefix, connector, continuation = stack.pop()
        text = label(node)
        lines = [escape_controls(t) for t in ([text] if isinstance(text, str) else text)]
        kids = children(node)
        out.append(truncate(prefix + connector + (lines[0] if lines else ""), width))
        detail_prefix = prefix + continuation + ("│  " if kids else "   ")
        for extra in lines[1:]:
            if wrap_details:
                out.extend(_wrap(detail_prefix, extra, width))
            else:
                out.append(truncate(detail_prefix + extra, width))
        for index in range(len(kids) - 1, -1, -1):
            last = index == len(kids) - 1
            stack.append(
                (
                    kids[index],
                    prefix + continuation,
                    "└─ " if last else "├─ ",
                    "   " if last else "│  ",
                )
            )
    return "\n".join(out)


def _wrap(prefix: str, text: str, width: int) -> list[str]:
    """``prefix + text`` as lines of at most ``width``, each under ``prefix`` (a word
    longer than a line is split: nothing is left out)."""
    room = max(20, width - len(prefix))
    if len(text) <= room:
        return [prefix + text]
    return [prefix + part for part in textwrap.wrap(text, room, break_on_hyphens=False)]


@dataclasses.dataclass
class Kept:
    """A node kept by :func:`prune_tree`, its kept children, and how many of its
    descendants were left out."""

    node: Any
    children: list[Kept]
    left_out: int = 0


def prune_tree(
    roots: Sequence[T],
    children: Callable[[T], Sequence[T]],
    *,
    match: Callable[[T], bool] | None = None,
    max_depth: int | None = None,
    limit: int | None = None,
) -> tuple[list[Kept], int, int]:
    """The part of a tree to show: ``(kept roots, nodes kept, nodes in all)``.

    ``match``: only nodes it accepts, with their ancestors for context; ``max_depth``:
    that many levels (1 = the roots); ``limit``: at most that many nodes, the first in
    tree order. Each kept node counts, in ``left_out``, the nodes under its children
    that were not kept (with those children): where the tree was cut.
    """
    # Loops, not recursion: a chain of messages can nest spans thousands deep.
    order: list[T] = []  # every node, parents before their children
    pending = list(reversed(roots))
    while pending:
        node = pending.pop()
        order.append(node)
        pending.extend(reversed(children(node)))
    relevant: dict[int, bool] = {}
    sizes: dict[int, int] = {}
    for node in reversed(order):  # children before their parents
        kids = children(node)
        relevant[id(node)] = (match is None or match(node)) or any(relevant[id(k)] for k in kids)
        sizes[id(node)] = 1 + sum(sizes[id(k)] for k in kids)
    budget = sys.maxsize if limit is None else limit
    kept_roots: list[Kept] = []
    kept_of: dict[int, Kept] = {}
    # Pre-order with each node's depth and the Kept of its parent (None for a root).
    walk: list[tuple[T, int, Kept | None]] = [(root, 1, None) for root in reversed(roots)]
    while walk and budget > 0:
        node, depth, parent = walk.pop()
        if not relevant[id(node)]:
            continue
        budget -= 1
        kept = kept_of[id(node)] = Kept(node, [])
        (kept_roots if parent is None else parent.children).append(kept)
        if max_depth is None or depth < max_depth:
            walk.extend((kid, depth + 1, kept) for kid in reversed(children(node)))
    for kept in kept_of.values():
        # Counted where they were cut off: the subtrees of children not kept.
        kept.left_out = sum(sizes[id(k)] for k in children(kept.node) if id(k) not in kept_of)
    return kept_roots, len(kept_of), sum(sizes[id(root)] for root in roots)


def left_out_note(shown: int, total: int, noun: str, hints: str) -> str | None:
    """``(40 of 1,234 spans shown; --limit N, --depth N ... for others)``, or None when
    nothing was left out."""
    if shown >= total:
        return None
    return f"({shown:,} of {total:,} {noun} shown; {hints})"
