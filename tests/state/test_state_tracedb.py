"""state_history / state_at through a real SQLite trace DB, with threads, and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import procscope
from procscope.instrumentation.state import trace_state


class Ledger:
    """An account with a nested dict, traced per instance in these tests."""

    def __init__(self) -> None:
        self.balance = 0
        self.limits: dict[str, int] = {"daily": 100}
        self.lock = threading.Lock()

    def deposit(self, amount: int) -> int:
        with self.lock:
            self.balance += amount
        return self.balance

    def set_limit(self, key: str, value: int) -> None:
        self.limits[key] = value

    def peek(self) -> int:
        return self.balance


def _expected(ledger: Ledger) -> dict[str, str]:
    return {"balance": repr(ledger.balance), "limits": repr(ledger.limits)}


def _fields(state: Any) -> dict[str, str | None]:
    return {k: v for k, v in state.fields.items() if k != "lock"}


def test_state_at_matches_the_object_at_every_moment(tracedb: Any) -> None:
    """After every operation, state_at(that instant) equals the real object's fields."""
    ledger = trace_state(Ledger(), name="ledger", fields=["balance", "limits"])
    moments = [(time.time_ns(), _expected(ledger))]
    operations = [
        lambda: ledger.deposit(10),
        lambda: ledger.peek(),
        lambda: ledger.set_limit("weekly", 500),
        lambda: setattr(ledger, "balance", 3),
        lambda: ledger.set_limit("daily", 50),
    ] + [lambda i=i: ledger.deposit(i) for i in range(1, 15)]
    for operation in operations:
        operation()
        moments.append((time.time_ns(), _expected(ledger)))
    with tracedb.flush() as db:
        for at_ns, expected in moments:
            state = db.state_at("ledger", at_ns)
            assert state is not None
            assert state.fields == expected, at_ns
            assert state.complete
        history = db.state_history("ledger")
        assert db.state_at("ledger", history[0].time_ns - 1) is None
        kinds = [r.kind for r in history]
        # snapshot_every=5 (fixture): periodic snapshots among the 18 changes.
        assert kinds.count("change") == 18
        assert kinds.count("snapshot") >= 4
        assert "ledger" in db.state_objects()


def test_threads_changing_one_object(tracedb: Any) -> None:
    """Concurrent deposits from 4 threads: every change recorded once, final state exact."""
    ledger = trace_state(Ledger(), name="shared", fields=["balance"])
    threads = [
        threading.Thread(target=lambda: [ledger.deposit(100) for _ in range(50)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = time.time_ns()
    assert ledger.balance == 20_000
    with tracedb.flush() as db:
        changes = [r for r in db.state_history("shared") if r.kind == "change"]
        assert len(changes) == 200
        # Each deposit made a distinct balance under the program's lock: all recorded once.
        assert sorted(int(c.values[0]) for c in changes) == list(range(100, 20_001, 100))
        assert len({c.field_seqs[0] for c in changes}) == 200
        state = db.state_at("shared", done)
        assert state is not None and state.fields == {"balance": "20000"}


def test_transitions_in_history_and_state(tracedb: Any) -> None:
    """A transitions machine's moves appear in the history and rebuild the model's state."""
    from transitions import Machine

    class Door:
        def __init__(self) -> None:
            self.locked = True

        def is_unlocked(self) -> bool:
            return not self.locked

    door = procscope.name(Door(), "door")
    created = time.time_ns()
    Machine(
        model=door,
        states=["closed", "open"],
        initial="closed",
        transitions=[
            {"trigger": "push", "source": "closed", "dest": "open", "conditions": "is_unlocked"},
            {"trigger": "pull", "source": "open", "dest": "closed"},
        ],
    )
    taken_on = time.time_ns()
    assert door.push() is False  # locked: the condition fails
    before_open = time.time_ns()
    door.locked = False
    assert door.push() is True
    opened = time.time_ns()
    with tracedb.flush() as db:
        history = db.state_history("door")
        # The machine taking the model on is its first snapshot: its initial state.
        assert history[0].kind == "snapshot" and history[0].snapshot_reason == "start"
        assert history[0].fields == ["state"] and history[0].values == ["'closed'"]
        assert created <= history[0].time_ns <= taken_on
        history = history[1:]
        assert [(r.transition or {}).get("conditions_passed") for r in history] == [False, True]
        assert history[1].transition == {
            "trigger": "push",
            "source": "closed",
            "destination": "open",
            "machine": "Machine",
            "conditions_passed": True,
        }
        # Before any transition, the state the machine gave it.
        initial = db.state_at("door", taken_on)
        assert initial is not None and initial.fields == {"state": "'closed'"}
        # The failed attempt says where the model stayed.
        stayed = db.state_at("door", before_open)
        assert stayed is not None and stayed.fields == {"state": "'closed'"}
        state = db.state_at("door", opened)
        assert state is not None and state.fields == {"state": "'open'"}
        assert state.complete  # the start snapshot of its state attribute, then transitions


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_procscope(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )


def _procscope() -> str:
    return os.path.join(os.path.dirname(sys.executable), "procscope")


def test_cli_history_and_at(tracedb: Any) -> None:
    """`procscope state NAME` prints the timeline; --at (ISO or time of day) the state."""
    ledger = trace_state(Ledger(), name="cli-ledger", fields=["balance", "limits"])
    ledger.deposit(7)
    middle = time.time_ns()
    time.sleep(0.002)
    ledger.set_limit("daily", 1)
    tracedb.flush().close()

    history = _cli("state", "cli-ledger", "--db", tracedb.path)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0] == "state history of cli-ledger (3 records)"
    assert "snapshot (start): balance=0, limits={'daily': 100}" in lines[2]
    assert "deposit" in lines[3] and "balance: 0 → 7" in lines[3]
    assert "set_limit" in lines[4] and "limits['daily']: 100 → 1" in lines[4]

    local = dt.datetime.fromtimestamp(middle / 1e9)
    for when in (
        local.isoformat(),
        local.strftime("%H:%M:%S.%f"),
        dt.datetime.fromtimestamp(middle / 1e9, dt.timezone.utc).isoformat(),
    ):
        at = _cli("state", "cli-ledger", "--at", when, "--db", tracedb.path)
        assert at.returncode == 0, at.stderr
        rows = dict(line.split(None, 1) for line in at.stdout.splitlines()[2:])
        assert rows == {"balance": "7", "limits": "{'daily': 100}"}, (when, at.stdout)

    as_json = _cli("state", "cli-ledger", "--at", local.isoformat(), "--json", "--db", tracedb.path)
    data = json.loads(as_json.stdout)
    assert data["fields"] == {"balance": 7, "limits": "{'daily': 100}"}  # 7 an int
    assert data["complete"] is True
    history_json = json.loads(_cli("state", "cli-ledger", "--json", "--db", tracedb.path).stdout)
    assert [r["kind"] for r in history_json["history"]] == ["snapshot", "change", "change"]


def test_cli_errors_are_one_line_exit_2(tracedb: Any, tmp_path: Any) -> None:
    """Unknown name, bad time, unreadable DB: exit status 2 and one line on stderr."""
    trace_state(Ledger(), name="known", fields=["balance"]).deposit(1)
    tracedb.flush().close()
    unknown = _cli("state", "nobody", "--db", tracedb.path)
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "recorded: known" in unknown.stderr
    bad_time = _cli("state", "known", "--at", "yesterday-ish", "--db", tracedb.path)
    assert bad_time.returncode == 2 and bad_time.stderr.count("\n") == 1
    too_early = _cli("state", "known", "--at", "2001-01-01T00:00:00", "--db", tracedb.path)
    assert too_early.returncode == 2 and "first record" in too_early.stderr
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    unreadable = _cli("state", "known", "--db", str(junk))
    assert unreadable.returncode == 2 and unreadable.stderr.count("\n") == 1


SETUP_SCRIPT = """
import multiprocessing, os, sys
import procscope

procscope.setup(db=sys.argv[1], exporter="tracedb")


@procscope.trace_state
class Account:
    def __init__(self):
        self.balance = 0

    def deposit(self, amount):
        self.balance += amount


account = procscope.name(Account(), "acct")
account.deposit(5)


def child():
    account.deposit(100)
    print("child", os.getpid(), account.balance, flush=True)


process = multiprocessing.get_context("fork").Process(target=child)
process.start()
process.join()
account.deposit(1)
print("parent", os.getpid(), account.balance, flush=True)
procscope.shutdown()
"""


def test_setup_and_fork_keep_processes_apart(tmp_path: Any) -> None:
    """Through procscope.setup(): a forked child's changes are told apart by pid."""
    db_path = str(tmp_path / "setup.db")
    script = tmp_path / "app.py"
    script.write_text(SETUP_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), db_path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pids = {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines()}
    from procscope.exporters.tracedb import TraceDB

    with TraceDB(db_path) as db:
        history = db.state_history("acct")
        assert {r.pid for r in history} == {pids["parent"], pids["child"]}
        child_records = db.state_history("acct", pid=pids["child"])
        assert [r.kind for r in child_records] == ["change", "snapshot"]
        assert child_records[1].snapshot_reason == "fork"
        end = max(r.time_ns for r in history)
        parent_state = db.state_at("acct", end, pid=pids["parent"])
        child_state = db.state_at("acct", end, pid=pids["child"])
        assert parent_state is not None and parent_state.fields == {"balance": "6"}
        assert child_state is not None and child_state.fields == {"balance": "105"}


def test_renamed_object_rebuilt_under_its_new_name(tracedb: Any) -> None:
    """An object named after tracing started has its own history from the rename on."""

    @trace_state
    class Wallet:
        def __init__(self) -> None:
            self.coins = 0

        def add(self, n: int) -> None:
            self.coins += n

    wallet = procscope.name(Wallet(), "wallet")
    wallet.add(2)
    wallet.add(3)
    done = time.time_ns()
    with tracedb.flush() as db:
        kinds = [(r.kind, r.snapshot_reason) for r in db.state_history("wallet")]
        assert kinds == [("change", None), ("snapshot", "renamed"), ("change", None)]
        state = db.state_at("wallet", done)
        assert state is not None and state.fields == {"coins": "5"} and state.complete
