"""Unsampled state changes in the flight recorder's ring (``procscope.core.flight``).

Where head sampling leaves a change unrecorded (the tracker only notes that it must
resynchronise later), the flight recorder, when on, keeps a record of it:
``(time, STATE's code, thread, class name, object name, payload)``: names, not the
tracker, so that the record (strings, ints and tuples of them) is not walked by the
garbage collector. The payload holds the method, the fields, their change numbers, the
epoch label of the moment, and the old and new values (frozen: they cannot change before
a dump), or the change event's attributes when the path had already made them. A dump
makes each into a span holding the usual ``procscope.state.change`` event, which
``procscope state`` reads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from opentelemetry.trace import SpanKind

from procscope.core import flight, shared_state
from procscope.core.flight import F_A, F_B, F_C, F_CODE, F_THREAD, F_TIME

from . import _semconv as sc
from ._diff import MISSING, SCALARS, freeze, value_repr
from ._tracker import KINDS, SKIP, attribute_kind

_live = shared_state.settings()
_time_ns = time.time_ns
_ident = threading.get_ident


class StateKind(flight.FlightKind):
    """A state change of a traced object."""

    name = "state"

    def span(self, record: tuple[Any, ...]) -> tuple[Any, ...] | None:
        type_name, name, payload = record[F_A], record[F_B], record[F_C]
        if type(payload) is dict:
            attributes = dict(payload)
            method = attributes.get(sc.METHOD, "")
        elif len(payload) == 4:  # one assignment (note_assignment): field, seq, epoch, value
            field, seq, epoch, value = payload
            return self.span((record[F_TIME], record[F_CODE], record[F_THREAD], type_name,
                              name, ("(set)", (field,), (seq,), epoch, None, (value,))))
        else:
            method, fields, seqs, epoch, olds, news = payload
            attributes = {
                sc.OBJECT: name,
                sc.CLASS: type_name,
                sc.METHOD: method,
                sc.EPOCH: epoch,
                sc.SEQ: max(seqs),
                sc.FIELDS: fields,
                sc.FIELD_SEQS: seqs,
            }
            if _live.capture_content:
                if olds is not None:
                    attributes[sc.OLD_VALUES] = tuple(
                        value_repr(old, field) for old, field in zip(olds, fields))
                attributes[sc.VALUES] = tuple(
                    value_repr(new, field) for new, field in zip(news, fields))
        at = record[F_TIME]
        span_attributes = {sc.OBJECT: name, sc.CLASS: type_name}
        return (f"{type_name.rpartition('.')[2]}.{method}", SpanKind.INTERNAL, at, at,
                span_attributes, [(sc.EVENT_CHANGE, attributes, at)], None)


STATE = StateKind()


def _epoch(tracker: Any, name: str) -> str:
    # As change_attributes says it: before the first snapshot under this name, epoch 0.
    return tracker.epoch_label if name == tracker.last_name else f"{name}/0"


def note_assignment(tracker: Any, obj: Any, field: Any, value: Any,
                    kind: tuple[int, Any] | None = None) -> None:
    """An assignment in a trace head sampling dropped (the old value is not known):
    (field, change number, epoch, new value), the usual cases inlined (every unsampled
    assignment of a traced object comes here while the recorder is on). ``kind``: the
    attribute's kind, when the caller has already looked it up."""
    add = flight.append
    if add is None or type(field) is not str:
        return
    fields = tracker.fields
    if fields is not None and field not in fields:
        return
    if kind is None:
        per_class = KINDS.get(type(obj))
        kind = per_class.get(field) if per_class is not None else None
        if kind is None:
            kind = attribute_kind(type(obj), field)
    if kind[0] == SKIP:
        return
    if type(value) not in SCALARS and value is not MISSING:
        from ._runtime import RT

        value = freeze(value, RT.max_depth, RT.max_items)
    name = tracker.given_name or tracker.name_of(obj)
    epoch = tracker.epoch_label if name == tracker.last_name else name + "/0"
    flight.count()
    add((_time_ns(), STATE.code, _ident(), tracker.type_name, name,
         (field, next(tracker.counter), epoch, value)))


def note_changes(tracker: Any, obj: Any, method: str,
                 changed: list[tuple[str, Any, Any, int]]) -> None:
    """Changes already compared (field, old frozen, new frozen, seq) that no span took."""
    add = flight.append
    if add is None:
        return
    name = tracker.name_of(obj)
    fields = tuple(c[0] for c in changed)
    flight.count()
    add((_time_ns(), STATE.code, _ident(), tracker.type_name, name,
         (method, fields, tuple(c[3] for c in changed), _epoch(tracker, name),
          tuple(c[1] for c in changed), tuple(c[2] for c in changed))))


def note_event(tracker: Any, name: str, attributes: dict[str, Any]) -> None:
    """A change event's attributes, made before sampling said no."""
    add = flight.append
    if add is not None:
        flight.count()
        add((_time_ns(), STATE.code, _ident(), tracker.type_name, name, attributes))
