"""`procscope state NAME --at TIME` takes TIME to the precision given: a time copied from
the history table (which shows milliseconds) includes the record shown there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from procscope.instrumentation.state import trace_state


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def bump(self) -> None:
        self.count += 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    procscope = os.path.join(os.path.dirname(sys.executable), "procscope")
    return subprocess.run([procscope, *args], capture_output=True, text=True, check=False)


def test_at_a_time_copied_from_the_history_includes_that_record(tracedb: Any) -> None:
    """--at with the first record's printed time (ms) rebuilds it; a second before it fails."""
    counter = trace_state(Counter(), name="precise", fields=["count"])
    # The change must fall in a later millisecond than the snapshot, or the snapshot's
    # printed millisecond rightly includes it too (seen under load: count 1).
    time.sleep(0.005)
    counter.bump()
    tracedb.flush().close()
    history = _cli("state", "precise", "--db", tracedb.path)
    assert history.returncode == 0, history.stderr
    first_line = history.stdout.splitlines()[2]  # title, header, then the snapshot
    printed = " ".join(first_line.split()[:2])  # "YYYY-MM-DD HH:MM:SS.mmm"
    assert "snapshot" in first_line and len(printed.rsplit(".", 1)[1]) == 3
    at = _cli("state", "precise", "--at", printed.replace(" ", "T"), "--db", tracedb.path)
    assert at.returncode == 0, at.stderr
    assert at.stdout.splitlines()[2].split() == ["count", "0"]
    whole_second = printed.rsplit(".", 1)[0].replace(" ", "T")
    by_second = _cli("state", "precise", "--at", whole_second, "--db", tracedb.path)
    assert by_second.returncode == 0  # 12:03:05 means up to 12:03:05.999...
    before = _cli("state", "precise", "--at", "2001-01-01T00:00:00", "--db", tracedb.path)
    assert before.returncode == 2 and "its first record is at" in before.stderr
