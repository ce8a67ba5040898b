"""``procscope messages``: (being written; see the issue that owns it)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _not_ready(args: argparse.Namespace) -> int:
    sys.stderr.write("procscope messages: not available yet\n")
    return 2


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("messages", help="(not available yet)")
    parser.add_argument("--db")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_not_ready)
