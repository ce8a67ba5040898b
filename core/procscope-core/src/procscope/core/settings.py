"""procscope's settings: one parser for keywords and environment variables.

Precedence is keyword, then environment, then default. A bad value never stops the host
program: it gives one :class:`SettingWarning` that names the setting and the value, and
the default is used instead.
"""

from __future__ import annotations

import os
import re
import warnings

from . import shared_state

# (typing and collections.abc only for type checkers: ``procscope run``'s launcher
# imports this module, and what it imports delays every traced program's start)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    T = TypeVar("T")

LEVELS = ("full", "messages_only", "states_only", "minimal", "off")
BUILTIN_EXPORTERS = ("tracedb", "otlp", "console", "none")

ENV_DB = "PROCSCOPE_DB"
ENV_LEVEL = "PROCSCOPE_LEVEL"
ENV_SAMPLE_RATE = "PROCSCOPE_SAMPLE_RATE"
ENV_CAPTURE_CONTENT = "PROCSCOPE_CAPTURE_CONTENT"
ENV_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_SAMPLING = "PROCSCOPE_SAMPLING"
ENV_OVERFLOW = "PROCSCOPE_OVERFLOW"
ENV_DB_MAX_BYTES = "PROCSCOPE_DB_MAX_BYTES"
ENV_DB_MAX_AGE = "PROCSCOPE_DB_MAX_AGE"
ENV_SCRUB_KEYS = "PROCSCOPE_SCRUB_KEYS"
ENV_SCRUB_VALUES = "PROCSCOPE_SCRUB_VALUES"
ENV_FLIGHT_RECORDER = "PROCSCOPE_FLIGHT_RECORDER"
ENV_FLIGHT_WINDOW = "PROCSCOPE_FLIGHT_WINDOW"
ENV_FLIGHT_MEMORY = "PROCSCOPE_FLIGHT_MEMORY"

DEFAULT_DB = "procscope.db"
DEFAULT_LEVEL = "full"
DEFAULT_SAMPLE_RATE = 1.0
DEFAULT_CAPTURE_CONTENT = True
DEFAULT_EXPORTERS: tuple[str, ...] = ("tracedb",)
# The flight recorder (docs/flight-recorder.md): on by default when sample_rate < 1.
DEFAULT_FLIGHT_WINDOW = 30.0
DEFAULT_FLIGHT_MEMORY = 32 * 1024 * 1024
FLIGHT_RECORDER_DEFAULT_TEXT = "the default (on when sample_rate < 1)"
# head: sample_rate decides at the start of a trace; tail: every trace is recorded and the
# tail-sampling processor keeps errors, abnormal ends, slow traces and sample_rate of the rest.
SAMPLING_MODES = ("head", "tail")
DEFAULT_SAMPLING = "head"
# What a full export queue does to the thread that ends a span: wait for room (bounded,
# then the span is dropped and counted) or drop it at once (counted). Unset, it follows
# the sample rate: wait at full recall (a debugging run wants everything), drop when
# sampling (production must never block). See docs/configuration.md.
OVERFLOW_POLICIES = ("wait", "drop")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# "A procscope setting had a bad value; the default was used instead."
SettingWarning: type[UserWarning] = shared_state.SettingWarning


class BadSettingError(ValueError):
    """Raised by a parser for a value it cannot accept."""


def warn_bad(setting: str, value: object, reason: str, fallback: object) -> None:
    """The single warning for a bad setting: what, which value, why, and what is used."""
    warnings.warn(
        f"procscope: bad value for setting {setting}: {value!r} ({reason}); "
        f"using {fallback!r} instead",
        SettingWarning,
        stacklevel=5,
    )


def one_of(value: object, choices: tuple[str, ...]) -> str:
    """``value`` as one of ``choices`` (case and spaces ignored)."""
    text = str(value).strip().lower()
    if text not in choices:
        raise BadSettingError("expected one of " + ", ".join(choices))
    return text


def parse_level(value: object) -> str:
    return one_of(value, LEVELS)


def parse_rate(value: object) -> float:
    if isinstance(value, bool):
        raise BadSettingError("expected a number from 0.0 to 1.0")
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadSettingError("expected a number from 0.0 to 1.0") from None
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise BadSettingError("expected a number from 0.0 to 1.0")
    return rate


def parse_sampling_mode(value: object) -> str:
    """``head`` or ``tail`` (see docs/sampling.md)."""
    return one_of(value, SAMPLING_MODES)


def parse_overflow(value: object) -> str:
    """``wait`` or ``drop``."""
    return one_of(value, OVERFLOW_POLICIES)


def default_overflow(sample_rate: float) -> str:
    """The overflow policy when none is given: wait at full recall, drop when sampling."""
    return "wait" if sample_rate >= 1.0 else "drop"


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadSettingError("expected true or false")


def parse_positive_float(value: object) -> float:
    """A positive number (sizes, ages, timeouts); 0 or a negative number is refused."""
    if isinstance(value, bool):
        raise BadSettingError("expected a positive number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadSettingError("expected a positive number") from None
    if not number > 0 or number == float("inf"):
        raise BadSettingError("expected a positive number")
    return number


def parse_byte_count(value: object) -> int:
    """A positive number of bytes (a size limit)."""
    return int(parse_positive_float(value))


def _with_unit(
    value: object, units: tuple[tuple[str, float], ...], parse: Callable[[object], Any],
    expected: str,
) -> float:
    """A positive number, alone or followed by one of ``units`` (scaled by it)."""
    if not isinstance(value, str):
        return float(parse(value))
    text = value.strip().lower().replace(" ", "")
    for unit, scale in units:
        if text.endswith(unit) and text[: -len(unit)]:
            text, factor = text[: -len(unit)], scale
            break
    else:
        factor = 1.0
    try:
        return parse_positive_float(text) * factor
    except BadSettingError:
        raise BadSettingError(f"expected {expected}") from None


_DURATION_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
_SIZE_UNITS = (
    ("kib", 1024.0), ("mib", 1024.0**2), ("gib", 1024.0**3), ("kb", 1e3), ("mb", 1e6),
    ("gb", 1e9), ("k", 1024.0), ("m", 1024.0**2), ("g", 1024.0**3), ("b", 1.0),
)


def parse_duration(value: object) -> float:
    """Seconds, as a number or with a unit: ``30``, ``30s``, ``2m``, ``500ms``."""
    return _with_unit(value, _DURATION_UNITS, parse_positive_float, "a duration such as 30s")


def parse_size(value: object) -> int:
    """Bytes, as a number or with a unit: ``33554432``, ``32MiB``, ``512KiB``, ``1GB``."""
    size = int(_with_unit(value, _SIZE_UNITS, parse_byte_count, "a size such as 32MiB"))
    if size < 1:
        raise BadSettingError("expected a size such as 32MiB")
    return size


def parse_pattern(value: object) -> str:
    """A regular expression (docs/scrubbing.md); a list of them is joined as alternatives."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        value = "|".join(f"(?:{v})" for v in value)
    if not isinstance(value, str) or not value.strip():
        raise BadSettingError("expected a regular expression")
    try:
        re.compile(value)
    except re.error as exc:
        raise BadSettingError(f"not a regular expression ({exc})") from None
    return value


def parse_db(value: object) -> str:
    """An absolute path to a trace DB file that we can create or write."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise BadSettingError("expected a file path")
    path = os.path.abspath(os.path.expanduser(os.fspath(value)))
    if os.path.isdir(path):
        raise BadSettingError("it is a directory")
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise BadSettingError("the file is not readable and writable")
    else:
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise BadSettingError(f"its folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BadSettingError(f"its folder {parent} is not writable")
    return path


def known_exporters() -> set[str]:
    """Exporter names: ours, and those registered as ``opentelemetry_traces_exporter``."""
    names = set(BUILTIN_EXPORTERS)
    try:
        from importlib.metadata import entry_points

        names.update(ep.name for ep in entry_points(group="opentelemetry_traces_exporter"))
    except Exception:  # noqa: BLE001 -- broken metadata must not stop setup
        pass
    return names


def parse_exporters(value: object) -> tuple[str, ...]:
    """Comma-separated exporter names; unknown ones are refused as a whole."""
    if isinstance(value, (list, tuple)):
        parts = [str(v).strip().lower() for v in value]
    else:
        parts = [p.strip().lower() for p in str(value).split(",")]
    parts = [p for p in parts if p]
    if not parts:
        raise BadSettingError("no exporter named")
    # Scanning entry points costs tens of milliseconds at every start: only when needed.
    unknown = [p for p in parts if p not in BUILTIN_EXPORTERS]
    if unknown:
        unknown = [p for p in unknown if p not in known_exporters()]
    if unknown:
        raise BadSettingError("unknown exporter " + ", ".join(unknown))
    if "none" in parts:
        return ()
    return tuple(dict.fromkeys(parts))


def resolve_one(
    keyword: str,
    env_name: str,
    given: object,
    parser: Callable[[object], T],
    default: T,
    environ: Mapping[str, str] | None = None,
    default_text: str | None = None,
) -> T:
    """One setting: the keyword if given, else the environment, else the default
    (named ``default_text`` in the warning, when given)."""
    env = os.environ if environ is None else environ
    if given is not None:
        source, raw = keyword, given
    else:
        raw_env = env.get(env_name)
        if raw_env is None or not raw_env.strip():
            return default
        source, raw = env_name, raw_env
    try:
        return parser(raw)
    except BadSettingError as exc:
        warn_bad(source, raw, str(exc), default if default_text is None else _Named(default_text))
        return default


class _Named:
    """A default that is a rule rather than a value, as the warning names it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


OVERFLOW_DEFAULT_TEXT = "the default (wait at sample_rate 1.0, else drop)"


class Settings:
    """The settings of one ``procscope.setup()``: immutable, equal by value.

    (What ``@dataclass(frozen=True)`` makes, written out: importing ``dataclasses``,
    and ``inspect`` with it, cost ``procscope run``'s launcher about 5 ms.)"""

    FIELDS = ("db", "level", "sample_rate", "capture_content", "exporters", "sampling",
              "db_max_bytes", "db_max_age", "scrub_keys", "scrub_values", "overflow",
              "flight_recorder", "flight_window", "flight_memory")

    db: str
    level: str
    sample_rate: float
    capture_content: bool
    exporters: tuple[str, ...]
    sampling: str
    db_max_bytes: int | None
    db_max_age: float | None
    scrub_keys: str | None
    scrub_values: str | None
    # None: not given, so it follows sample_rate (see overflow_policy).
    overflow: str | None
    # None: not given, so on when sample_rate < 1 (see flight_recorder_on).
    flight_recorder: bool | None
    flight_window: float
    flight_memory: int

    def __init__(
        self,
        db: str,
        level: str,
        sample_rate: float,
        capture_content: bool,
        exporters: tuple[str, ...],
        sampling: str = DEFAULT_SAMPLING,
        db_max_bytes: int | None = None,
        db_max_age: float | None = None,
        scrub_keys: str | None = None,
        scrub_values: str | None = None,
        overflow: str | None = None,
        flight_recorder: bool | None = None,
        flight_window: float = DEFAULT_FLIGHT_WINDOW,
        flight_memory: int = DEFAULT_FLIGHT_MEMORY,
    ) -> None:
        values = locals()
        for name in self.FIELDS:
            object.__setattr__(self, name, values[name])

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Settings are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: Settings are immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"Settings({shown})"

    @property
    def flight_recorder_on(self) -> bool:
        """Whether the flight recorder runs: as given, else when sampling."""
        if self.flight_recorder is None:
            return self.sample_rate < 1.0
        return self.flight_recorder

    @property
    def overflow_policy(self) -> str:
        """``wait`` or ``drop``: the one given, else the default for ``sample_rate``."""
        return self.overflow or default_overflow(self.sample_rate)

    def as_environ(self) -> dict[str, str]:
        """The environment that gives a child process these same settings."""
        env = {
            ENV_DB: self.db,
            ENV_LEVEL: self.level,
            ENV_SAMPLE_RATE: repr(self.sample_rate),
            ENV_CAPTURE_CONTENT: "true" if self.capture_content else "false",
            ENV_EXPORTER: ",".join(self.exporters) or "none",
            ENV_SAMPLING: self.sampling,
        }
        if self.db_max_bytes is not None:
            env[ENV_DB_MAX_BYTES] = str(self.db_max_bytes)
        if self.db_max_age is not None:
            env[ENV_DB_MAX_AGE] = repr(self.db_max_age)
        if self.scrub_keys is not None:
            env[ENV_SCRUB_KEYS] = self.scrub_keys
        if self.scrub_values is not None:
            env[ENV_SCRUB_VALUES] = self.scrub_values
        if self.overflow is not None:
            env[ENV_OVERFLOW] = self.overflow
        from .runs import ENV_RUN_ID, current_id

        run_id = current_id()
        if run_id is not None:
            # Also into an env= the program gave a subprocess: one run, whatever starts it.
            env[ENV_RUN_ID] = run_id
        return env


def default_db() -> str:
    return os.path.abspath(DEFAULT_DB)


def resolve(
    *,
    db: Any = None,
    level: Any = None,
    sample_rate: Any = None,
    capture_content: Any = None,
    exporter: Any = None,
    sampling: Any = None,
    db_max_bytes: Any = None,
    db_max_age: Any = None,
    scrub_keys: Any = None,
    scrub_values: Any = None,
    overflow: Any = None,
    flight_recorder: Any = None,
    flight_window: Any = None,
    flight_memory: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting, warning once for each bad value."""
    return Settings(
        db=resolve_one("db", ENV_DB, db, parse_db, default_db(), environ),
        level=resolve_one("level", ENV_LEVEL, level, parse_level, DEFAULT_LEVEL, environ),
        sample_rate=resolve_one(
            "sample_rate", ENV_SAMPLE_RATE, sample_rate, parse_rate, DEFAULT_SAMPLE_RATE, environ
        ),
        capture_content=resolve_one(
            "capture_content",
            ENV_CAPTURE_CONTENT,
            capture_content,
            parse_bool,
            DEFAULT_CAPTURE_CONTENT,
            environ,
        ),
        exporters=resolve_one(
            "exporter", ENV_EXPORTER, exporter, parse_exporters, DEFAULT_EXPORTERS, environ
        ),
        sampling=resolve_one(
            "sampling", ENV_SAMPLING, sampling, parse_sampling_mode, DEFAULT_SAMPLING, environ
        ),
        db_max_bytes=resolve_one(
            "db_max_bytes", ENV_DB_MAX_BYTES, db_max_bytes, parse_byte_count, None, environ
        ),
        db_max_age=resolve_one(
            "db_max_age", ENV_DB_MAX_AGE, db_max_age, parse_positive_float, None, environ
        ),
        scrub_keys=resolve_one(
            "scrub_keys", ENV_SCRUB_KEYS, scrub_keys, parse_pattern, None, environ
        ),
        scrub_values=resolve_one(
            "scrub_values", ENV_SCRUB_VALUES, scrub_values, parse_pattern, None, environ
        ),
        overflow=resolve_one(
            "overflow",
            ENV_OVERFLOW,
            overflow,
            parse_overflow,
            None,
            environ,
            default_text=OVERFLOW_DEFAULT_TEXT,
        ),
        flight_recorder=resolve_one(
            "flight_recorder",
            ENV_FLIGHT_RECORDER,
            flight_recorder,
            parse_bool,
            None,
            environ,
            default_text=FLIGHT_RECORDER_DEFAULT_TEXT,
        ),
        flight_window=resolve_one(
            "flight_window", ENV_FLIGHT_WINDOW, flight_window, parse_duration,
            DEFAULT_FLIGHT_WINDOW, environ,
        ),
        flight_memory=resolve_one(
            "flight_memory", ENV_FLIGHT_MEMORY, flight_memory, parse_size,
            DEFAULT_FLIGHT_MEMORY, environ,
        ),
    )
