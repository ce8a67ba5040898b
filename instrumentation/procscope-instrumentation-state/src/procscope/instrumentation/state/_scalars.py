"""The usual change, recorded in the fewest steps: fields holding builtin scalars.

Most state is numbers and strings replaced by numbers and strings. For those there is
nothing to copy or diff per key, and a repr is a plain ``repr()``: this module makes the
same ``procscope.state.change`` event as :func:`._tracker.record_changes` (which handles
everything else) with as few lookups, calls and dict operations as it can, because it
runs on every recorded change.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind

from procscope.core import flight as _flight
from procscope.core import shared_state
from procscope.core.guard import log_internal_error
from procscope.core.head_sampling import should_record
from procscope.core.saferepr import MASK

from . import _semconv as sc
from ._diff import (
    _BIG,
    _NEG_BIG,
    _PLAIN_REPR,
    SCALARS,
    SHORT_STR,
    _secret_names,
    scalar_repr,
    secret_name,
    str_repr,
)
from ._events import (
    _FAST_TYPES,
    _append,
    _limits_ok,
    _time_ns,
    add_event,
)
from ._flight import note_changes, note_event
from ._runtime import RT, SPAN_KEY, Target, context_get, current_span
from ._tracker import (
    Tracker,
    begin_target,
    change_attributes,
    record_changes,
    snapshot_after_change,
    snapshot_due,
    span_attributes,
)

_live = shared_state.settings()  # the live settings object: read its attributes per call
_INTERNAL = SpanKind.INTERNAL
_fast_types_get = _FAST_TYPES.get  # span class -> takes events built by _events._append
_dict_of = object.__getattribute__  # never the class's own __getattribute__
_NAME_ATTR = "_procscope_name"  # where procscope.name() keeps a name (see Tracker.name_of)
_NAMED_ELSEWHERE: Any = shared_state.get().names
_secret_names_get = _secret_names.get
_OBJECT, _CLASS, _METHOD, _EPOCH, _SEQ = sc.OBJECT, sc.CLASS, sc.METHOD, sc.EPOCH, sc.SEQ
_FIELDS, _FIELD_SEQS, _OLD_VALUES, _VALUES = sc.FIELDS, sc.FIELD_SEQS, sc.OLD_VALUES, sc.VALUES
_EVENT_CHANGE = sc.EVENT_CHANGE


def _record_general(
    tracker: Tracker,
    obj: Any,
    method: str,
    start_ns: int,
    assigned: dict[str, list[Any]] | None,
    frozen: dict[str, Any] | None,
) -> None:
    """Anything but one scalar field: several scalar fields here, else record_changes."""
    if frozen is None and assigned and not tracker.container_fields and not RT.log_events:
        for entry in assigned.values():
            if type(entry[0]) not in SCALARS or type(entry[1]) not in SCALARS:
                break
        else:
            _record_scalars(tracker, obj, method, start_ns, assigned)
            return
    record_changes(tracker, obj, method, start_ns, assigned, frozen)


def _record_scalars(
    tracker: Tracker, obj: Any, method: str, start_ns: int, assigned: dict[str, list[Any]]
) -> None:
    """record_changes when only builtin scalars were assigned (and no field holds a
    container): the usual case, with nothing to freeze or diff per key. Makes the same
    event as _emit_change, with fewer steps."""
    fields: list[str] = []
    seqs: list[int] = []
    olds: list[Any] = []
    news: list[Any] = []
    for field, entry in assigned.items():
        old, new, seq = entry
        # same() for two scalars: equal values of the same type.
        if old is new or (type(old) is type(new) and old == new):
            continue
        fields.append(field)
        seqs.append(seq)
        olds.append(old)
        news.append(new)
    if not fields:
        return
    _record_scalars_on(tracker, obj, method, start_ns, current_span(), fields, seqs, olds, news)


def record_frame(frame: list[Any], obj: Any, method: str) -> None:
    """Record what one method call changed (its frame, see _patch.F_*), if anything.

    One builtin scalar field changed is the usual case: it is taken here in the fewest
    steps (the same event as _emit_change makes; one function, no call between the
    exit and the event), on the span current when the call began, else the current
    span, or on a span made for it. Anything else goes the general way. Never raises
    (the guard logs).
    """
    try:
        # Frame slots: 1 tracker, 2 frozen, 3 assigned ([field, old, new, seq] for one
        # field, else a dict), 4 start_ns, 6 span.
        tracker = frame[1]
        assigned = frame[3]
        if type(assigned) is not list:  # several fields, or none and containers to compare
            _record_general(tracker, obj, method, frame[4], assigned, frame[2])
            return
        field, old, new, seq = assigned
        if (
            frame[2] is not None
            or tracker.container_fields
            or RT.log_events
            or type(old) not in SCALARS
            or type(new) not in SCALARS
        ):
            _record_general(tracker, obj, method, frame[4], {field: [old, new, seq]}, frame[2])
            return
        # same() for two scalars: equal values of the same type.
        if old is new or (type(old) is type(new) and old == new):
            return
        span = frame[6]
        start_ns = frame[4]
        # Tracker.name_of, its usual cases inlined (a call fewer per recorded change).
        name = tracker.given_name
        if name is None:
            try:
                name = _dict_of(obj, "__dict__").get(_NAME_ATTR)
            except Exception:  # noqa: BLE001 -- no __dict__, or a hostile one
                name = None
            if type(name) is not str:
                name = tracker.name_of(obj) if _NAMED_ELSEWHERE.data else tracker.default_name
        epoch = tracker.epoch_label if name == tracker.last_name else f"{name}/0"
        # Names bound to module globals and the dict made in one literal: each sc.X would be
        # one more lookup, each item added after one more dict operation.
        attributes: dict[str, Any]
        if _live.capture_content:
            secret = _secret_names_get(field)
            if secret is None:
                secret = secret_name(field)
            if secret:
                old_repr = new_repr = MASK
            else:
                # scalar_repr inlined for its fast cases. The old value is usually the
                # new one of this field's last change: the very object (scalars are
                # immutable, so its repr is the same), whose repr is remembered.
                last = tracker.last_repr
                if last is not None and last[1] is old and last[0] == field:
                    old_repr = last[2]
                else:
                    cls = type(old)
                    if (
                        (cls is int and _NEG_BIG < old < _BIG)
                        or cls in _PLAIN_REPR
                        or (cls is str and len(old) < SHORT_STR)
                    ):
                        old_repr = f"{old!r}"  # repr(), without a builtin's lookup and call
                    else:
                        old_repr = scalar_repr(old)
                cls = type(new)
                if (
                    (cls is int and _NEG_BIG < new < _BIG)
                    or cls in _PLAIN_REPR
                    or (cls is str and len(new) < SHORT_STR)
                ):
                    new_repr = f"{new!r}"
                    tracker.last_repr = (field, new, new_repr)  # small values only
                elif cls is str and len(new) <= 150:
                    new_repr = str_repr(new)  # scrubbed (and remembered)
                    tracker.last_repr = (field, new, new_repr)
                else:
                    new_repr = scalar_repr(new)
            attributes = {
                _OBJECT: name,
                _CLASS: tracker.type_name,
                _METHOD: method,
                _EPOCH: epoch,
                _SEQ: seq,
                _FIELDS: (field,),
                _FIELD_SEQS: (seq,),
                _OLD_VALUES: (old_repr,),
                _VALUES: (new_repr,),
            }
        else:
            attributes = {
                _OBJECT: name,
                _CLASS: tracker.type_name,
                _METHOD: method,
                _EPOCH: epoch,
                _SEQ: seq,
                _FIELDS: (field,),
                _FIELD_SEQS: (seq,),
            }
        if span is None:
            span = context_get().get(SPAN_KEY)
        # events.add_event, inlined for SDK spans: the event is built and appended at once,
        # and a span found ended then is one to replace (no separate is_recording() call).
        added = False
        if span is not None and _fast_types_get(type(span)) and span._limits is _limits_ok[0]:
            added = _append(span, _EVENT_CHANGE, attributes, span._limits.max_event_attributes)
        elif span is not None and span.is_recording():
            added = add_event(span, _EVENT_CHANGE, attributes)
        owned = False
        if not added:
            # _runtime.begin() for span events (record_frame never runs in log mode), in
            # fewer calls: the current span if it records, else a span of ours if the
            # head-sampling gate keeps this trace.
            span = context_get().get(SPAN_KEY)
            if span is None or not span.is_recording():
                if not should_record():
                    # Not sampled: the state moved on unseen; the next recorded change
                    # resyncs. (The flight recorder, when on, keeps the change.)
                    tracker.pending_snapshot = tracker.pending_snapshot or "resync"
                    if _flight.append is not None:
                        note_event(tracker, name, attributes)
                    return
                span = RT.spans.start_span(
                    f"{type(obj).__qualname__}.{method}",
                    kind=_INTERNAL,
                    attributes=span_attributes(tracker, name, method),
                    start_time=start_ns or _time_ns(),  # 0: the call's span since ended
                )
                owned = True
        try:
            if not added:
                add_event(span, _EVENT_CHANGE, attributes)
            tracker.since_snapshot += 1
            # snapshot_due(), inlined on this path (a call fewer per recorded change).
            if (
                tracker.pending_snapshot is None
                and tracker.generation == RT.generation
                and name == tracker.last_name
                and tracker.since_snapshot < RT.snapshot_every
            ):
                return
            snapshot_after_change(tracker, obj, name, Target(span, False))
        finally:
            if owned:
                span.end()

    except Exception:  # noqa: BLE001 -- the guard logs it
        log_internal_error()


def _record_scalars_on(
    tracker: Tracker,
    obj: Any,
    method: str,
    start_ns: int,
    span: Any,
    fields: list[str],
    seqs: list[int],
    olds: list[Any],
    news: list[Any],
) -> None:
    """_record_scalars for several fields, or when the current span does not record."""
    name = tracker.name_of(obj)
    target: Target | None = None
    if not span.is_recording():
        target = begin_target(tracker, obj, name, method, start_ns)
        if target is None:
            # Not sampled: the state moved on unseen; the next recorded change resyncs.
            tracker.pending_snapshot = tracker.pending_snapshot or "resync"
            if _flight.append is not None:
                note_changes(tracker, obj, method, list(zip(fields, olds, news, seqs)))
            return
        span = target.span
    try:
        attributes = change_attributes(tracker, name, method, fields, seqs)
        if _live.capture_content:
            old_reprs: list[str] = []
            new_reprs: list[str] = []
            for index, field in enumerate(fields):
                if secret_name(field):
                    old_reprs.append(MASK)
                    new_reprs.append(MASK)
                else:
                    old_reprs.append(scalar_repr(olds[index]))
                    new_reprs.append(scalar_repr(news[index]))
            attributes[sc.OLD_VALUES] = tuple(old_reprs)
            attributes[sc.VALUES] = tuple(new_reprs)
        add_event(span, sc.EVENT_CHANGE, attributes)
        tracker.since_snapshot += len(fields)
        if snapshot_due(tracker, name):
            snapshot_after_change(tracker, obj, name, target or Target(span, False))
    finally:
        if target is not None:
            target.end()


__all__ = ["record_frame"]
