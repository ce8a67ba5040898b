"""Settings: keyword, then environment, then default; bad values warn once and fall back."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from procscope import SettingWarning
from procscope.core.settings import resolve

BAD_VALUES = [
    ("level", "PROCSCOPE_LEVEL", "verbose", "level", "full"),
    ("sample_rate", "PROCSCOPE_SAMPLE_RATE", "lots", "sample_rate", 1.0),
    ("sample_rate", "PROCSCOPE_SAMPLE_RATE", "7", "sample_rate", 1.0),
    ("sample_rate", "PROCSCOPE_SAMPLE_RATE", "nan", "sample_rate", 1.0),
    ("capture_content", "PROCSCOPE_CAPTURE_CONTENT", "maybe", "capture_content", True),
    ("exporter", "OTEL_TRACES_EXPORTER", "kafka", "exporters", ("tracedb",)),
    ("exporter", "OTEL_TRACES_EXPORTER", "tracedb,nosuch", "exporters", ("tracedb",)),
    ("sampling", "PROCSCOPE_SAMPLING", "sometimes", "sampling", "head"),
    ("db_max_bytes", "PROCSCOPE_DB_MAX_BYTES", "-5", "db_max_bytes", None),
    ("db_max_age", "PROCSCOPE_DB_MAX_AGE", "forever", "db_max_age", None),
    ("scrub_keys", "PROCSCOPE_SCRUB_KEYS", "employee(", "scrub_keys", None),
    ("scrub_values", "PROCSCOPE_SCRUB_VALUES", "EMP-[0-9", "scrub_values", None),
]


def _resolve_capturing(**kwargs: object) -> tuple[object, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = resolve(**kwargs)  # type: ignore[arg-type]
    return settings, [w for w in caught if issubclass(w.category, SettingWarning)]


@pytest.mark.parametrize(("keyword", "env_name", "value", "field", "default"), BAD_VALUES)
def test_bad_keyword_value_warns_once_and_uses_default(
    keyword: str, env_name: str, value: str, field: str, default: object
) -> None:
    """A bad keyword value gives exactly one warning naming the setting and the value."""
    given = 7 if value == "7" else value
    settings, caught = _resolve_capturing(**{keyword: given}, environ={})
    assert len(caught) == 1
    message = str(caught[0].message)
    assert keyword in message and repr(given) in message
    assert getattr(settings, field) == default


@pytest.mark.parametrize(("keyword", "env_name", "value", "field", "default"), BAD_VALUES)
def test_bad_environment_value_warns_once_and_uses_default(
    keyword: str, env_name: str, value: str, field: str, default: object
) -> None:
    """A bad environment value gives one warning naming the variable and the value."""
    settings, caught = _resolve_capturing(environ={env_name: value})
    assert len(caught) == 1
    message = str(caught[0].message)
    assert env_name in message and repr(value) in message
    assert getattr(settings, field) == default


def test_keyword_beats_environment_beats_default(tmp_path: Path) -> None:
    """Precedence is keyword, then environment, then default."""
    env = {"PROCSCOPE_LEVEL": "minimal", "PROCSCOPE_SAMPLE_RATE": "0.25"}
    settings, caught = _resolve_capturing(level="off", environ=env)
    assert not caught
    assert settings.level == "off"  # type: ignore[attr-defined]
    assert settings.sample_rate == 0.25  # type: ignore[attr-defined]
    assert settings.capture_content is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["keyword", "environment"])
def test_unwritable_db_paths_fall_back_to_default(tmp_path: Path, where: str) -> None:
    """A DB path in a missing folder, or that is a folder, warns and uses ./procscope.db."""
    for bad in (tmp_path / "no" / "such" / "folder" / "x.db", tmp_path):
        if where == "keyword":
            settings, caught = _resolve_capturing(db=str(bad), environ={})
        else:
            settings, caught = _resolve_capturing(environ={"PROCSCOPE_DB": str(bad)})
        assert len(caught) == 1, bad
        assert str(bad) in str(caught[0].message)
        assert settings.db == os.path.abspath("procscope.db")  # type: ignore[attr-defined]


def test_db_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative DB path is made absolute against the working directory at setup."""
    monkeypatch.chdir(tmp_path)
    settings, _ = _resolve_capturing(db="traces.db", environ={})
    assert settings.db == str(tmp_path / "traces.db")  # type: ignore[attr-defined]


def test_exporter_lists_and_none() -> None:
    """Several exporters are comma-separated; none means no exporter at all."""
    settings, caught = _resolve_capturing(exporter="tracedb, console", environ={})
    assert not caught
    assert settings.exporters == ("tracedb", "console")  # type: ignore[attr-defined]
    settings, _ = _resolve_capturing(environ={"OTEL_TRACES_EXPORTER": "none"})
    assert settings.exporters == ()  # type: ignore[attr-defined]
