"""What the read commands write on stdout, and how wide: recorded text can neither drive
the terminal (control characters escaped) nor fail to print (glyphs fall back to ASCII,
other characters to escapes, in any stdout encoding); lines are cut to the terminal's
width on a terminal only (piped or redirected output is never cut).
"""

from __future__ import annotations

import codecs
import contextlib
import shutil
import sys
from typing import Any

# Characters that must not reach a terminal raw: C0 controls but the newline, DEL, C1
# controls, and the invisible ones that reorder or break lines (bidi overrides, U+2028/9).
# A recorded process name such as "proc\x1b]0;PWNED\x07" would otherwise set the
# terminal's title or clear the screen.
_INVISIBLE = [0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F)]
_INVISIBLE += list(range(0x2066, 0x206A))
_CONTROL_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL_ESCAPES.update({c: f"\\u{c:04x}" for c in _INVISIBLE})
_CONTROL_ESCAPES.update({0x09: "\\t", 0x0D: "\\r"})
_KEEP_NEWLINES = {c: e for c, e in _CONTROL_ESCAPES.items() if c != 0x0A}
_CONTROL_ESCAPES[0x0A] = "\\n"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control and invisible characters written as escapes (``\\x1b``)."""
    return text.translate(_KEEP_NEWLINES if keep_newlines else _CONTROL_ESCAPES)


# What the CLI's own glyphs become on a stdout that cannot encode them (cp1252, ascii):
# one character for one where a column's width depends on it.
_ASCII_GLYPHS = {
    "├": "|",
    "└": "`",
    "│": "|",
    "─": "-",
    "…": "~",
    "✗": "x",
    "•": "*",
    "→": "->",
    "µ": "u",
}
_GLYPH_ERRORS = "procscope-glyphs"


def _glyph_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    out = "".join(
        _ASCII_GLYPHS.get(ch) or ch.encode("ascii", "backslashreplace").decode("ascii")
        for ch in bad
    )
    return out, error.end


codecs.register_error(_GLYPH_ERRORS, _glyph_fallback)


class SafeOutput:
    """A text stream in front of stdout that escapes control characters and makes any
    text printable in the stream's encoding (see :data:`_ASCII_GLYPHS`)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            self._codec: str | None = codecs.lookup(encoding).name
        except LookupError:
            self._codec = "ascii"
        if self._codec in ("utf-8", "utf-16", "utf-32"):
            self._codec = None  # encodes every character but lone surrogates

    @property
    def encoding(self) -> str:
        return str(getattr(self._stream, "encoding", None) or "utf-8")

    def can_encode(self, text: str) -> bool:
        if self._codec is None:
            return True
        try:
            text.encode(self._codec)
        except UnicodeEncodeError:
            return False
        return True

    def write(self, text: str) -> int:
        text = escape_controls(text, keep_newlines=True)
        # Lone surrogates (undecodable bytes in argv or a file name) encode in no codec.
        text = text.encode(self._codec or "utf-8", _GLYPH_ERRORS).decode(self._codec or "utf-8")
        return int(self._stream.write(text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (AttributeError, ValueError):
            return False

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller may look up on sys.stdout (errors, closed, ...).
        return getattr(self._stream, name)


@contextlib.contextmanager
def safe_stdout() -> Any:
    """``sys.stdout`` behind a :class:`SafeOutput` for the duration."""
    if isinstance(sys.stdout, SafeOutput):
        yield sys.stdout
        return
    original = sys.stdout
    sys.stdout = SafeOutput(original)  # type: ignore[assignment]
    try:
        yield sys.stdout
    finally:
        sys.stdout = original


def ellipsis() -> str:
    """The glyph for text cut short: ``…``, or ``~`` where stdout cannot print it."""
    stream = sys.stdout
    if isinstance(stream, SafeOutput) and not stream.can_encode("…"):
        return "~"
    return "…"


# ---------------------------------------------------------------------------- text


# Set by as_terminal(): output captured to be shown on a terminal later (procscope demo).
_assume_terminal: bool | None = None


def stdout_is_terminal() -> bool:
    if _assume_terminal is not None:
        return _assume_terminal
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def as_terminal(terminal: bool) -> Any:
    """Lay text out as for a terminal (or not) whatever stdout is, for the duration."""
    global _assume_terminal
    before, _assume_terminal = _assume_terminal, terminal
    try:
        yield
    finally:
        _assume_terminal = before


def terminal_width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def line_width() -> int:
    """How wide a line may be: the terminal's width on a terminal; unlimited when stdout
    is a pipe or a file (``procscope state x | grep BROKEN`` must see every character)."""
    return terminal_width() if stdout_is_terminal() else sys.maxsize


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    mark = ellipsis()
    return text[: width - 1] + mark if width > 1 else mark
