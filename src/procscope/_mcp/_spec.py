"""Tool declarations: typed parameters, their JSON Schema, and checking what a client sent.

The server checks arguments itself rather than through the SDK's JSON Schema validation,
so that a bad argument gets a message naming the parameter, what was sent, and what to
pass instead (an assistant reads it and retries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ToolInputError(ValueError):
    """A bad argument, or a question the DB cannot answer as asked: the message says what
    to pass instead. Returned to the client as a tool error, never a crash."""


@dataclass(frozen=True)
class Param:
    """One parameter: ``kind`` is ``string``, ``integer`` or ``boolean``."""

    name: str
    kind: str
    description: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None

    def schema(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.kind, "description": self.description}
        if self.minimum is not None:
            data["minimum"] = self.minimum
        if self.maximum is not None:
            data["maximum"] = self.maximum
        return data

    def check(self, value: Any) -> Any:
        """The value as the handler takes it, or a ToolInputError saying what to send."""
        if value is None:
            return None
        if self.kind == "string":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)  # a pid or a run number sent as a number
            if not isinstance(value, str):
                raise ToolInputError(f"{self.name}: expected a string ({self.description})")
            return value
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise ToolInputError(f"{self.name}: expected true or false")
            return value
        # integer: JSON numbers, and digits sent as a string (some clients do)
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdecimal():
            number = int(value.strip())
        if number is None:
            raise ToolInputError(f"{self.name}: expected a whole number, got {_shown(value)}")
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            raise ToolInputError(
                f"{self.name}: expected a whole number from {low} to {high}, got {number}"
            )
        return number


@dataclass(frozen=True)
class Tool:
    """A tool: its name, what it is for (for a model), its parameters and its handler
    ``(reader, **arguments) -> dict`` (arguments named as the parameters)."""

    name: str
    description: str
    handler: Callable[..., dict[str, Any]]
    params: tuple[Param, ...] = field(default_factory=tuple)

    def input_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.params},
            "required": [p.name for p in self.params if p.required],
            "additionalProperties": False,
        }

    def arguments(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``given`` checked against the parameters, keyed by Python-safe names
        (``from`` -> ``from_``); missing optional ones are None."""
        given = dict(given or {})
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            takes = ", ".join(p.name for p in self.params) or "no arguments"
            raise ToolInputError(
                f"unknown argument {', '.join(unknown)}; {self.name} takes: {takes}"
            )
        checked: dict[str, Any] = {}
        for param in self.params:
            value = param.check(given.get(param.name))
            if value is None and param.required:
                raise ToolInputError(f"{param.name} is required: {param.description}")
            checked[param.name + "_" if param.name in _KEYWORDS else param.name] = value
        return checked


_KEYWORDS = frozenset({"from"})


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Parameters several tools share, described once.
RUN = Param(
    "run",
    "string",
    "a run id from list_runs (a unique start of one is enough), or 'all'; default: the latest run",
)
SINCE = Param(
    "since",
    "string",
    "only from this instant: ISO 8601 (2026-12-01T10:00:05.250Z; without an offset it "
    "is local time) or a time of day such as 10:00:05 (today, local)",
)
UNTIL = Param("until", "string", "only before this instant (same forms as since)")


def limit_param(default: int, maximum: int, what: str) -> Param:
    return Param(
        "limit", "integer", f"how many {what} at most (default {default})", False, 1, maximum
    )
