"""The shared helpers every package relies on: the guard, safe reprs, names."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from procscope.core import guard, naming, saferepr


@pytest.fixture
def swallowing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as in a user's program: internal errors are logged, not raised."""
    monkeypatch.delenv(guard.RAISE_ENV, raising=False)


def test_guard_swallows_and_logs_once_per_place(
    swallowing: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An internal error inside the guard never reaches the caller and is logged once."""
    caplog.set_level(logging.WARNING, logger="procscope")

    @guard.handle_internal_errors()
    def broken(n: int) -> int:
        raise ValueError(f"bug {n}")

    for n in range(5):
        assert broken(n) is None
    with guard.handle_internal_errors():
        raise KeyError("another place")
    records = [r for r in caplog.records if r.name == "procscope"]
    assert len(records) == 2
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError


def test_guard_lets_the_programs_own_exits_through(swallowing: None) -> None:
    """KeyboardInterrupt and SystemExit are the program's, never swallowed."""
    with pytest.raises(KeyboardInterrupt), guard.handle_internal_errors():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit), guard.handle_internal_errors():
        raise SystemExit(3)


def test_guard_raises_under_the_test_suite() -> None:
    """With PROCSCOPE_RAISE_INTERNAL_ERRORS=1 (the suite's setting) errors surface."""
    with pytest.raises(ZeroDivisionError), guard.handle_internal_errors():
        1 / 0  # noqa: B018


def test_guard_suppresses_instrumentation_while_logging(
    swallowing: None, caplog: pytest.LogCaptureFixture
) -> None:
    """While the error is logged, OpenTelemetry instrumentation is suppressed."""
    from opentelemetry import context

    seen: list[Any] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(context.get_value(context._SUPPRESS_INSTRUMENTATION_KEY))

    spy = Spy()
    logging.getLogger("procscope").addHandler(spy)
    try:
        with guard.handle_internal_errors():
            raise RuntimeError("suppressed place")
    finally:
        logging.getLogger("procscope").removeHandler(spy)
    assert seen == [True]
    assert context.get_value(context._SUPPRESS_INSTRUMENTATION_KEY) is None


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_safe_repr_never_raises_and_stays_bounded() -> None:
    """Raising, self-referencing and huge values give short, safe text."""
    # The program's own __repr__ is never called (it may raise, block or be slow): the
    # object is shown by its fields.
    assert saferepr.safe_repr(_Hostile()) == "_Hostile()"
    loop: list[Any] = [1]
    loop.append(loop)
    text = saferepr.safe_repr(loop)  # cut by depth, not followed forever
    assert text.startswith("[1, [1, ") and text.endswith("[...]]]]]") and len(text) < 40
    huge = {f"k{i}": "v" * 10_000 for i in range(10_000)}
    text = saferepr.safe_repr(huge, limit=300)
    assert len(text) <= 300
    assert saferepr.safe_repr(list(range(100))).endswith("...]")


def test_safe_repr_masks_values_under_secret_keys() -> None:
    """Values under keys that look like secrets are masked, at any depth."""
    text = saferepr.safe_repr(
        {"user": "ann", "password": "hunter2", "nested": {"api_key": "abc123", "n": 1}}
    )
    assert "hunter2" not in text and "abc123" not in text
    assert "'user': 'ann'" in text and "'password': ***" in text and "'n': 1" in text


def test_names_on_plain_and_slotted_objects() -> None:
    """procscope.name() names objects with or without a __dict__, and returns them."""

    class Slotted:
        __slots__ = ("__weakref__", "x")

    class Plain:
        pass

    plain, slotted = Plain(), Slotted()
    assert naming.set_name(plain, "jobs") is plain
    assert naming.set_name(slotted, "results") is slotted
    assert naming.get_name(plain) == "jobs"
    assert naming.get_name(slotted) == "results"
    assert naming.get_name(Plain()) is None
    with pytest.raises(TypeError):
        naming.set_name(plain, "")


def test_plugin_warnings_are_procscope_setting_warnings() -> None:
    """The plugins' shared settings parser (procscope-core) warns with procscope.SettingWarning."""
    import procscope
    from procscope.core import settings as plugin_settings

    assert plugin_settings.SettingWarning is procscope.SettingWarning
    with pytest.warns(procscope.SettingWarning, match="PROCSCOPE_LEVEL"):
        plugin_settings.resolve(environ={"PROCSCOPE_LEVEL": "loud"})


def test_safe_repr_runs_no_program_code_and_masks_every_shape() -> None:
    """Objects with their own __repr__, __iter__, __getitem__ or items() are shown by their
    fields without calling any of them; secrets are masked in mapping subclasses, bytes
    keys, header pairs and fields; a huge bytes value is sliced, not copied whole."""
    import collections
    import collections.abc

    calls: list[str] = []

    class Headers(collections.abc.Mapping):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self._store = {"authorization": "Bearer abcdefgh1234", "accept": "*/*"}

        def __getitem__(self, key: object) -> object:
            calls.append("getitem")
            raise KeyError(key)

        def __iter__(self) -> Any:
            calls.append("iter")
            return iter(())

        def __len__(self) -> int:
            calls.append("len")
            return 0

        def __repr__(self) -> str:
            calls.append("repr")
            return "Headers(...)"

    text = saferepr.safe_repr(Headers())
    assert calls == []
    assert text.endswith(".Headers(_store={'authorization': ***, 'accept': '*/*'})")
    assert saferepr.safe_repr(collections.OrderedDict(token="t0p")) == "OrderedDict({'token': ***})"
    assert saferepr.safe_repr({b"password": b"pw"}) == "{b'password': ***}"
    assert saferepr.safe_repr([("Cookie", "id=1")]) == "[('Cookie', ***)]"
    big = saferepr.safe_repr(b"\x00" * 50_000_000)
    assert len(big) < 1000 and big.startswith("b'\\x00")


def test_extra_rules_keep_their_own_groups_and_flags() -> None:
    """The program's own rules may use named groups, back-references and inline flags:
    they are compiled on their own, and masked whole."""
    try:
        saferepr.set_extra_rules(r"(?i)emp(?P<rest>loyee)", r"(?P<tag>EMP)-([0-9])\2[0-9]{4}")
        text = saferepr.safe_repr({"Employee_no": 7, "note": "badge EMP-114455 issued"})
        assert text == "{'Employee_no': ***, 'note': 'badge *** issued'}"
        assert saferepr.safe_repr("badge EMP-123456") == "'badge EMP-123456'"  # no \2 match
    finally:
        saferepr.set_extra_rules(None, None)
    assert saferepr.safe_repr({"employee": 7}) == "{'employee': 7}"


def test_safe_repr_work_is_bounded_in_nested_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four levels of 16 items hold 65,536 distinct strings: only the few whose text can
    reach the recorded 512 characters are made and scrubbed (all 65,536 were)."""
    scrubbed: list[str] = []
    real = saferepr.scrub_text

    def counting(text: str) -> str:
        scrubbed.append(text)
        return real(text)

    monkeypatch.setattr(saferepr, "scrub_text", counting)
    leaves = iter(range(16**4))
    nest = [
        [
            [[f"{next(leaves):08d}" + "p" * 60 for _ in range(16)] for _ in range(16)]
            for _ in range(16)
        ]
        for _ in range(16)
    ]
    text = saferepr.safe_repr(nest)
    assert len(text) <= 512 and text.startswith("[[[['00000000pppp")
    assert 0 < len(scrubbed) < 200
