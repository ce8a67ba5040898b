"""What ``procscope demo`` prints after the example has run."""

from __future__ import annotations


def print_demo_report(db: str, since_ns: int) -> int:
    print(f"recorded into {db}")
    return 0
