"""trace_state on plain classes, dataclasses, __slots__ classes and single objects."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import pickle
import threading
from typing import Any

import pytest

import procscope
from procscope.instrumentation.state import trace_state


@procscope.trace_state
class BankAccount:
    """A bank account whose balance and history change."""

    def __init__(self, owner: str, balance: int = 0) -> None:
        self.owner = owner
        self.balance = balance
        self.history: list[int] = []
        self._lock = threading.Lock()

    def deposit(self, amount: int) -> int:
        if amount <= 0:
            raise ValueError("deposit must be positive")
        with self._lock:
            self.balance += amount
            self.history.append(amount)
        return self.balance

    def withdraw(self, amount: int) -> int:
        with self._lock:
            if amount > self.balance:
                raise ValueError("insufficient funds")
            self.balance -= amount
            self.history.append(-amount)
        return self.balance

    def statement(self) -> str:
        return f"{self.owner}: {self.balance}"

    def transfer_to(self, other: BankAccount, amount: int) -> None:
        self.withdraw(amount)
        other.deposit(amount)


@procscope.trace_state
@dataclasses.dataclass
class Settings:
    """A dataclass with a nested dict and a nested dataclass."""

    name: str
    limits: dict[str, int] = dataclasses.field(default_factory=dict)
    tags: set[str] = dataclasses.field(default_factory=set)

    def limit(self, key: str, value: int) -> None:
        self.limits[key] = value

    def tag(self, *names: str) -> None:
        self.tags.update(names)

    def rename(self, name: str) -> None:
        self.name = name


@procscope.trace_state
class Point:
    """A __slots__ class, with a property over a slot."""

    __slots__ = ("_x", "y")

    def __init__(self, x: int, y: int) -> None:
        self._x = x
        self.y = y

    @property
    def x(self) -> int:
        return self._x

    @x.setter
    def x(self, value: int) -> None:
        self._x = value

    def move(self, dx: int, dy: int) -> tuple[int, int]:
        self._x += dx
        self.y += dy
        return (self._x, self.y)


def test_method_change_recorded_with_old_and_new(recorder: Any) -> None:
    """A deposit records one change event with the balance's old and new values."""
    account = BankAccount("alice", 10)
    name = (
        "BankAccount#"
        + recorder.events("procscope.state.snapshot")[-1]["procscope.state.object"].split("#")[1]
    )
    assert account.deposit(5) == 15
    changes = recorder.changes(name)
    assert len(changes) == 1
    change = changes[0]
    assert change["procscope.state.method"] == "deposit"
    assert change["procscope.state.fields"] == ("balance", "history")
    assert change["procscope.state.old_values"] == ("10", "[]")
    assert change["procscope.state.values"] == ("15", "[5]")
    assert change["procscope.state.change.paths"] == ("history[0]",)
    assert change["procscope.state.change.new"] == ("5",)
    assert change["span"] == "BankAccount.deposit"


def test_start_snapshot_at_end_of_init(recorder: Any) -> None:
    """A decorated class's object is snapshotted once, when __init__ returns."""
    BankAccount("bob", 7)
    snapshots = recorder.events("procscope.state.snapshot")
    assert len(snapshots) == 1
    snapshot = snapshots[0]
    assert snapshot["procscope.state.snapshot.reason"] == "start"
    assert dict(zip(snapshot["procscope.state.fields"], snapshot["procscope.state.values"])) == {
        "owner": "'bob'",
        "balance": "7",
        "history": "[]",
        "_lock": snapshot["procscope.state.values"][3],
    }
    assert recorder.changes() == []  # assignments in __init__ are not changes


def test_nothing_changed_records_nothing(recorder: Any) -> None:
    """A method that only reads makes no event and no span."""
    account = BankAccount("carol", 3)
    recorder.clear()
    assert account.statement() == "carol: 3"
    assert recorder.spans() == []


def test_events_go_on_the_current_span(recorder: Any) -> None:
    """Inside a span of the program, the change event is added to it (no new span)."""
    account = BankAccount("dan")
    recorder.clear()
    with recorder.tracer.start_as_current_span("request"):
        account.deposit(4)
    spans = recorder.spans()
    assert [s.name for s in spans] == ["request"]
    assert [e.name for e in spans[0].events] == ["procscope.state.change"]


def test_outside_assignment_and_delete_recorded(recorder: Any) -> None:
    """Assignments and deletions from outside the methods are recorded as they happen."""
    account = BankAccount("erin", 1)
    procscope.name(account, "erin-account")
    account.balance = 99
    account.nickname = "e"
    del account.nickname
    changes = recorder.changes("erin-account")
    assert [c["procscope.state.method"] for c in changes] == [
        "__setattr__",
        "__setattr__",
        "__delattr__",
    ]
    assert changes[0]["procscope.state.old_values"] == ("1",)
    assert changes[0]["procscope.state.values"] == ("99",)
    assert changes[1]["procscope.state.old_values"] == ("<absent>",)
    assert changes[2]["procscope.state.values"] == ("<absent>",)


def test_nested_method_calls_record_once(recorder: Any) -> None:
    """A method calling another of the same object records one event, for the outer call."""
    a, b = BankAccount("a", 50), BankAccount("b", 0)
    procscope.name(a, "acct-a")
    procscope.name(b, "acct-b")
    a.transfer_to(b, 20)
    assert [c["procscope.state.method"] for c in recorder.changes("acct-a")] == ["transfer_to"]
    assert [c["procscope.state.method"] for c in recorder.changes("acct-b")] == ["deposit"]


def test_exception_passes_through_unchanged(recorder: Any) -> None:
    """The method's exception reaches the caller as it was; nothing changed, nothing recorded."""
    account = BankAccount("f", 5)
    recorder.clear()
    with pytest.raises(ValueError, match="insufficient funds"):
        account.withdraw(100)
    assert recorder.spans() == []


def test_object_behaves_as_before(recorder: Any) -> None:
    """Type, identity, isinstance, pickling, copying and equality of fields are unchanged."""
    account = BankAccount("g", 5)
    account.deposit(1)
    assert type(account) is BankAccount
    assert isinstance(account, BankAccount)
    assert "_procscope" not in repr(vars(account))
    state = {k: v for k, v in vars(account).items() if k != "_lock"}
    assert state == {"owner": "g", "balance": 6, "history": [1]}
    point = Point(1, 2)
    clone = pickle.loads(pickle.dumps(point))
    assert type(clone) is Point and (clone.x, clone.y) == (1, 2)
    shallow = copy.copy(point)
    assert (shallow.x, shallow.y) == (1, 2)
    settings = Settings("s", {"a": 1})
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert copy.deepcopy(settings) == settings
    assert dataclasses.fields(Settings)[0].name == "name"
    assert BankAccount.deposit.__name__ == "deposit"


def test_dataclass_nested_dict_and_set_diffed(recorder: Any) -> None:
    """A dataclass's dict and set fields are diffed per key and per element."""
    settings = Settings("svc", {"cpu": 1})
    procscope.name(settings, "svc-settings")
    settings.limit("cpu", 2)
    settings.limit("mem", 512)
    settings.tag("prod")
    settings.rename("svc2")
    changes = recorder.changes("svc-settings")
    assert changes[0]["procscope.state.change.paths"] == ("limits['cpu']",)
    assert changes[0]["procscope.state.change.old"] == ("1",)
    assert changes[0]["procscope.state.change.new"] == ("2",)
    assert changes[1]["procscope.state.change.paths"] == ("limits['mem']",)
    assert changes[1]["procscope.state.change.old"] == ("<absent>",)
    assert changes[2]["procscope.state.change.paths"] == ("tags{'prod'}",)
    assert changes[3]["procscope.state.fields"] == ("name",)
    assert changes[3]["procscope.state.values"] == ("'svc2'",)


def test_dataclass_inside_dict_diffed_per_field(recorder: Any) -> None:
    """A dataclass held in a field is diffed field by field, shown as Class(field=...)."""

    @dataclasses.dataclass
    class Limit:
        soft: int
        hard: int

    @trace_state(name="quota")
    class Quota:
        def __init__(self) -> None:
            self.limits = {"disk": Limit(1, 2)}

        def raise_soft(self) -> None:
            self.limits["disk"].soft += 1

    Quota().raise_soft()
    change = recorder.changes("quota#1")[0]
    assert change["procscope.state.change.paths"] == ("limits['disk'].soft",)
    assert change["procscope.state.change.old"] == ("1",)
    assert change["procscope.state.change.new"] == ("2",)
    # Shown as the dataclass's own repr would show it (qualified name), built by procscope.
    assert change["procscope.state.values"] == (
        f"{{'disk': {Limit.__qualname__}(soft=2, hard=2)}}",
    )


def test_slots_and_property(recorder: Any) -> None:
    """__slots__ fields are recorded; a property setter records its slot, not the property."""
    from procscope.instrumentation.state._tracker import TRACKERS

    point = Point(0, 0)
    # No __dict__ and no __weakref__: procscope.name() cannot name it; its number does.
    name = recorder.events("procscope.state.snapshot")[-1]["procscope.state.object"]
    assert name.startswith("Point#")
    assert point.move(2, 3) == (2, 3)
    point.x = 10
    changes = recorder.changes(name)
    assert changes[0]["procscope.state.fields"] == ("_x", "y")
    assert changes[0]["procscope.state.values"] == ("2", "3")
    assert changes[1]["procscope.state.fields"] == ("_x",)
    assert changes[1]["procscope.state.values"] == ("10",)
    # It takes no weak references: the __del__ hook forgets its tracker when it dies.
    key = id(point)
    assert key in TRACKERS
    del point
    assert key not in TRACKERS


def test_trace_one_instance(recorder: Any) -> None:
    """trace_state(obj, name=, fields=) traces that object only, and only those fields."""

    class Counter:
        def __init__(self) -> None:
            self.count = 0
            self.noise = 0

        def tick(self) -> None:
            self.count += 1
            self.noise += 1

    traced, other = Counter(), Counter()
    assert trace_state(traced, name="ticks", fields=["count"]) is traced
    traced.tick()
    other.tick()
    changes = recorder.changes()
    assert [c["procscope.state.object"] for c in changes] == ["ticks"]
    assert changes[0]["procscope.state.fields"] == ("count",)
    snapshot = recorder.events("procscope.state.snapshot")[0]
    assert snapshot["procscope.state.fields"] == ("count",)
    assert other.count == 1 and type(other) is Counter


def test_default_names_are_class_and_number(recorder: Any) -> None:
    """Objects of a class named at decoration are name#1, name#2...; renaming starts anew."""

    @trace_state(name="worker")
    class Worker:
        def __init__(self) -> None:
            self.jobs = 0

        def work(self) -> None:
            self.jobs += 1

    first, second = Worker(), Worker()
    first.work()
    second.work()
    procscope.name(second, "renamed")
    second.work()
    objects = [c["procscope.state.object"] for c in recorder.changes()]
    assert objects == ["worker#1", "worker#2", "renamed"]
    renamed = recorder.events("procscope.state.snapshot", "renamed")
    assert renamed[0]["procscope.state.snapshot.reason"] == "renamed"


def test_capture_content_off_records_fields_only(recorder: Any, live_settings: Any) -> None:
    """With capture_content off, which fields changed is recorded but no value."""
    live_settings.capture_content = False
    account = BankAccount("h", 1)
    procscope.name(account, "quiet")
    account.deposit(2)
    change = recorder.changes("quiet")[0]
    assert change["procscope.state.fields"] == ("balance", "history")
    assert change["procscope.state.change.paths"] == ("history[0]",)
    for key in ("values", "old_values", "change.old", "change.new"):
        assert f"procscope.state.{key}" not in change
    assert "procscope.state.values" not in recorder.events("procscope.state.snapshot")[-1]


def test_secret_fields_masked(recorder: Any) -> None:
    """Values under secret-looking names are masked; that they changed is still recorded."""

    @trace_state(name="login")
    class Login:
        def __init__(self) -> None:
            self.password = "hunter2"
            self.headers = {"api_key": "k1", "user": "u"}

        def rotate(self) -> None:
            self.password = "hunter3"
            self.headers["api_key"] = "k2"

    Login().rotate()
    change = recorder.changes("login#1")[0]
    text = repr(change)
    assert "hunter" not in text and "k2" not in text and "k1" not in text
    assert change["procscope.state.fields"] == ("password", "headers")
    assert change["procscope.state.values"][0] == "***"


def test_async_method_changes_recorded(recorder: Any) -> None:
    """An async method's changes are recorded when it finishes, per task."""

    @trace_state(name="cache")
    class Cache:
        def __init__(self) -> None:
            self.entries: dict[str, int] = {}

        async def fill(self, key: str, value: int) -> int:
            await asyncio.sleep(0.01)
            self.entries[key] = value
            return value

    cache = Cache()

    async def main() -> list[int]:
        return await asyncio.gather(cache.fill("a", 1), cache.fill("b", 2))

    assert asyncio.run(main()) == [1, 2]
    changes = recorder.changes("cache#1")
    assert {c["procscope.state.method"] for c in changes} == {"fill"}
    assert cache.entries == {"a": 1, "b": 2}
    final = changes[-1]["procscope.state.values"][0]
    assert final == "{'a': 1, 'b': 2}"


def test_switched_off_records_nothing(recorder: Any) -> None:
    """After uninstrument() the wrappers pass straight through."""
    from procscope.instrumentation.state import StateInstrumentor

    account = BankAccount("i", 0)
    recorder.clear()
    StateInstrumentor().uninstrument()
    try:
        account.deposit(1)
        account.balance = 5
        assert account.balance == 5
        assert recorder.spans() == []
    finally:
        StateInstrumentor().instrument(tracer_provider=recorder.provider)


def test_bad_arguments_are_clear_errors() -> None:
    """trace_state refuses builtin types and bad names/fields with a TypeError."""
    with pytest.raises(TypeError, match="only classes defined in Python"):
        trace_state(dict)
    with pytest.raises(TypeError, match="only classes defined in Python"):
        trace_state({"a": 1})
    with pytest.raises(TypeError, match="name"):
        trace_state(BankAccount, name="")
    with pytest.raises(TypeError, match="fields"):
        trace_state(BankAccount, fields=[1, 2])


def test_subclass_of_traced_class_is_traced(recorder: Any) -> None:
    """A subclass's own methods are traced too (patched when its first instance is seen)."""

    class Savings(BankAccount):
        def __init__(self, owner: str) -> None:
            super().__init__(owner)
            self.rate = 1

        def add_interest(self) -> None:
            self.balance += self.rate

    first = Savings("s1")
    second = Savings("s2")
    procscope.name(second, "savings")
    second.add_interest()
    second.deposit(3)
    changes = recorder.changes("savings")
    assert [c["procscope.state.method"] for c in changes] == ["add_interest", "deposit"]
    start = [
        e
        for e in recorder.events("procscope.state.snapshot")
        if e["procscope.state.values"][0] == "'s2'"
    ]
    assert start[0]["procscope.state.fields"] == ("owner", "balance", "history", "_lock", "rate")
    assert isinstance(first, BankAccount) and type(first) is Savings


def test_naming_a_traced_object_with_trace_state(recorder: Any) -> None:
    """trace_state(obj, name=) on an already traced object snapshots it at once."""
    account = BankAccount("j", 4)
    recorder.clear()
    assert procscope.trace_state(account, name="named-now") is account
    (snapshot,) = recorder.events("procscope.state.snapshot", "named-now")
    assert snapshot["procscope.state.snapshot.reason"] == "renamed"
    assert snapshot["procscope.state.epoch"] == "named-now/1"
    account.deposit(1)
    assert recorder.changes("named-now")[0]["procscope.state.epoch"] == "named-now/1"


def test_task_started_in_a_method_records_its_own_changes(recorder: Any) -> None:
    """A task created inside a method (context copied) records later changes itself."""

    @trace_state(name="spawner")
    class Spawner:
        def __init__(self) -> None:
            self.done = False

        def start(self) -> Any:
            return asyncio.get_running_loop().create_task(self._finish())

        async def _finish(self) -> None:
            await asyncio.sleep(0.01)
            self.done = True

    spawner = Spawner()

    async def main() -> None:
        await spawner.start()

    asyncio.run(main())
    changes = recorder.changes("spawner#1")
    assert [c["procscope.state.method"] for c in changes] == ["__setattr__"]
    assert changes[0]["procscope.state.values"] == ("True",)
