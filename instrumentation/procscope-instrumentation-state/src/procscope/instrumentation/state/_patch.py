"""Patching a user class so that its objects' state changes can be seen.

``trace_state`` patches the class in place (never the instance, whose type, identity,
pickles and copies must stay exactly as they were):

* each public method (a plain or ``async`` function whose name has no leading underscore,
  own or inherited) is wrapped: the call runs in a *frame* that collects what the
  object's ``__setattr__``/``__delattr__`` saw, and, for fields holding containers, a copy
  taken at the start to diff at the end;
* ``__setattr__``/``__delattr__`` are wrapped around the class's own (or inherited) ones:
  inside a frame they note the change, outside any they record it at once;
* for ``@trace_state`` on a class, ``__init__`` is wrapped: assignments while the object is
  built are not changes, and tracing (the first snapshot) starts when it returns;
* instances that take no weak references get a ``__del__`` hook that forgets their tracker.

A class patched for one instance (``trace_state(obj)``) has pass-through wrappers for its
other instances: one dict lookup. Frames live in a ContextVar, so that threads and asyncio
tasks each see their own; a method called from another method of the same object adds no
frame (the outer call is the "message" that changed the state).
"""

from __future__ import annotations

import functools
import inspect
import time
from contextvars import ContextVar
from typing import Any

from procscope.core import flight as _flight
from procscope.core.guard import log_internal_error
from procscope.core.patched import keep_identity

from ._diff import MISSING, freeze
from ._fastwrap import exact_wrapper
from ._flight import note_assignment
from ._runtime import (
    LAST_CONTEXT,
    OTHER,
    RECORDING,
    RT,
    UNSAMPLED,
    call_kind,
    context_get,
    context_kind,
)
from ._scalars import record_frame
from ._tracker import (
    IN_DICT,
    KINDS,
    SKIP,
    TRACKERS,
    Tracker,
    attribute_kind,
    read_kind,
    read_state,
    read_state_field,
    record_start,
    register,
)

INFO_ATTR = "_procscope_state_info"
_WRAPPED_MARK = "_procscope_state_wrapped"
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement

_frames: ContextVar[tuple[Frame, ...]] = ContextVar("procscope_state_frames", default=())


# A frame is one outermost method call on one object, in one thread or task, in a trace
# that is sampled (a call in a trace head sampling dropped has none: see the hooks). It
# is a list, not an object: it is made on every traced call, and a list costs a fifth of
# an instance with __init__. Its slots:
F_OID = 0  # id() of the object
F_TRACKER = 1  # its Tracker; None while the object is being built (__init__)
F_FROZEN = 2  # field -> frozen value at the start, for fields holding containers; or None
F_ASSIGNED = 3  # what the hooks saw: None; [field, old, new, seq] while one field only
#                (the usual case: no dict to make or unpack); else field -> [old, new, seq]
F_START = 4  # time.time_ns() at the start (the start of a span made afterwards); 0 when
#              a recording span was current then (the events go on it: no span is made)
F_TOKEN = 5  # the ContextVar token that pushed it
F_SPAN = 6  # the span current at the start (None: none), where the events go
Frame = list  # [oid, tracker, frozen, assigned, start_ns, token, span]
# _fastwrap's compiled wrappers use these slots by number.
assert (F_OID, F_FROZEN, F_ASSIGNED, F_TOKEN) == (0, 2, 3, 5)
assert (RECORDING, UNSAMPLED, OTHER) == (0, 1, 2)
# A frame's oid once its call has returned. A task or context copied during the call
# (asyncio.create_task in a method) still holds the frame: it must no longer match, or
# that task's later assignments would go into a call already recorded.
CLOSED = 0  # also in _fastwrap's template


class ClassInfo:
    """What trace_state did to a class."""

    __slots__ = ("all_instances", "cls", "fields", "name", "orig_delattr", "orig_setattr")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.all_instances = False
        self.name: str | None = None
        self.fields: frozenset[str] | None = None
        self.orig_setattr: Any = None
        self.orig_delattr: Any = None


def info_of(obj: Any) -> ClassInfo | None:
    return getattr(type(obj), INFO_ATTR, None)


def _find_frame(oid: int) -> Frame | None:
    for frame in reversed(_frames.get()):
        if frame[F_OID] == oid:
            return frame
    return None


# ---------------------------------------------------------------------------- trackers


def new_tracker(obj: Any, name: str | None, fields: frozenset[str] | None) -> Tracker:
    info = info_of(obj)
    if name is None and info is not None and info.name is not None:
        # A name given to a class names its instances name#1, name#2...
        tracker = Tracker(obj, None, fields, info.name)
    else:
        tracker = Tracker(obj, name, fields, None)
    tracker.note_containers(read_state(obj, fields))
    return register(obj, tracker)


def _lazy_tracker(obj: Any, method: str, start_ns: int | None) -> Tracker | None:
    """For ``@trace_state`` classes: the tracker of an object first seen now."""
    info = info_of(obj)
    if info is None or not info.all_instances:
        return None
    cls = type(obj)
    if cls.__dict__.get(INFO_ATTR) is None:
        # A subclass of a traced class, seen for the first time: patch it too, so that
        # its own methods (and __init__, from its next instance on) are traced as well.
        try:
            sub = patch_class(cls, all_instances=True)
            sub.name, sub.fields = info.name, info.fields
            info = sub
        except Exception:  # noqa: BLE001 -- the guard logs it; the parent's patch still works
            log_internal_error()
    tracker = new_tracker(obj, None, info.fields)
    if tracker.generation == -1:
        record_start(tracker, obj, method, start_ns)
    return tracker


# ---------------------------------------------------------------------------- frames


def _enter(obj: Any) -> Frame | None:
    """Push a frame for a call on ``obj``, or None when this call records nothing itself."""
    _context, span, kind = call_kind()
    if kind == UNSAMPLED:
        return None  # the hooks see the same span: nothing is noted, the tracker resyncs
    oid = id(obj)
    tracker = TRACKERS.get(oid)
    frames = _frames.get()
    if frames:
        for frame in frames:
            if frame[F_OID] == oid:
                return None  # nested call on the same object, or __init__ still running
    if tracker is None:
        tracker = _lazy_tracker(obj, "__init__", None)
        if tracker is None:
            return None
    frozen = None
    if tracker.container_fields:
        max_depth, max_items = RT.max_depth, RT.max_items
        frozen = {
            field: freeze(read_state_field(obj, field), max_depth, max_items)
            for field in tracker.container_fields
        }
    frame = [oid, tracker, frozen, None, 0 if kind == RECORDING else time.time_ns(), None, span]
    frame[F_TOKEN] = _frames.set((*frames, frame))
    return frame


def _exit(frame: Frame, obj: Any, method: str) -> None:
    _frames.reset(frame[F_TOKEN])
    frame[F_OID] = CLOSED
    if frame[F_ASSIGNED] is None and frame[F_FROZEN] is None:
        return  # nothing assigned, no container to compare: nothing changed
    _record_exit(frame, obj, method)


_record_exit = record_frame  # records what a call changed (guarded; same frame slots)
assert (F_TRACKER, F_FROZEN, F_ASSIGNED, F_START, F_SPAN) == (1, 2, 3, 4, 6)


def wrap_method(func: Any, method: str) -> Any:
    """The wrapper of one public method."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not RT.active:
                return await func(self, *args, **kwargs)
            try:
                frame = _enter(self)
            except Exception:  # noqa: BLE001 -- the guard logs it
                log_internal_error()
                frame = None
            if frame is None:
                return await func(self, *args, **kwargs)
            try:
                return await func(self, *args, **kwargs)
            finally:
                _exit(frame, self, method)

        setattr(async_wrapper, _WRAPPED_MARK, True)
        return async_wrapper

    frames_get, frames_set, frames_reset = _frames.get, _frames.set, _frames.reset
    trackers_get, time_ns = TRACKERS.get, time.time_ns
    last_context = LAST_CONTEXT

    exact = exact_wrapper(
        func,
        method,
        (RT, trackers_get, frames_get, frames_set, frames_reset, time_ns, _enter,
         _record_exit, log_internal_error, context_get, last_context, context_kind),
    )  # fmt: skip
    if exact is not None:
        exact = functools.wraps(func)(exact)
        setattr(exact, _WRAPPED_MARK, True)
        return exact

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not RT.active:
            return func(self, *args, **kwargs)
        # The common case inlined (a tracked object, no frame open, no container field):
        # this runs on every call, changed or not, so every attribute lookup counts.
        # Whether this call records is decided once, here, from the current span: in a
        # trace head sampling dropped no frame is pushed (and the hooks note nothing).
        try:
            context = context_get()
            call = last_context[0]
            if call[0] is not context:
                call = context_kind(context)
            _context, span, kind = call
            if kind == UNSAMPLED:
                frame: Frame | None = None
            else:
                tracker = trackers_get(id(self))
                if tracker is not None and not tracker.container_fields and not frames_get():
                    start = time_ns() if kind != RECORDING else 0
                    fresh: Frame = [id(self), tracker, None, None, start, None, span]
                    fresh[F_TOKEN] = frames_set((fresh,))
                    frame = fresh
                else:
                    frame = _enter(self)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
            frame = None
        if frame is None:
            return func(self, *args, **kwargs)
        try:
            return func(self, *args, **kwargs)
        finally:
            frames_reset(frame[F_TOKEN])
            frame[F_OID] = CLOSED
            if frame[F_ASSIGNED] is not None or frame[F_FROZEN] is not None:
                _record_exit(frame, self, method)

    setattr(wrapper, _WRAPPED_MARK, True)
    return wrapper


def _wrap_init(orig_init: Any) -> Any:
    @functools.wraps(orig_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        if not RT.active:
            return orig_init(self, *args, **kwargs)  # type: ignore[no-any-return]
        oid = id(self)
        frame: Frame | None = None
        try:
            if oid not in TRACKERS and _find_frame(oid) is None:
                frame = [oid, None, None, None, time.time_ns(), None, None]
                frame[F_TOKEN] = _frames.set((*_frames.get(), frame))
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
        if frame is None:
            return orig_init(self, *args, **kwargs)  # type: ignore[no-any-return]
        try:
            result = orig_init(self, *args, **kwargs)
        finally:
            _frames.reset(frame[F_TOKEN])
            frame[F_OID] = CLOSED
        try:
            _lazy_tracker(self, "__init__", frame[F_START])
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
        return result  # type: ignore[no-any-return]

    setattr(__init__, _WRAPPED_MARK, True)
    return __init__


# ---------------------------------------------------------------------------- hooks


def _quiet(tracker: Tracker) -> bool:
    """True in a trace head sampling dropped: note that the state moved on unseen.

    Outside a frame of its object (an assignment from outside its methods, or from a
    method called in such a trace, which pushes no frame), a change is recorded at once,
    so the current span decides; nothing is recorded and the next recorded change
    resynchronises with a snapshot.
    """
    if call_kind()[2] != UNSAMPLED:
        return False
    if tracker.pending_snapshot is None:
        tracker.pending_snapshot = "resync"
    return True


def _before_change(obj: Any, name: str) -> tuple[Any, ...] | None:
    """What the hook needs after the assignment: (tracker, frame, kind, old), or None."""
    oid = id(obj)
    tracker = TRACKERS.get(oid)
    frame = _find_frame(oid) if _frames.get() else None
    if tracker is None:
        if frame is None:
            info = info_of(obj)
            if info is not None and info.all_instances:
                return (None,)  # first sight of an object of a traced class: start after
        return None
    if frame is not None and frame[F_TRACKER] is None:
        return None  # being built
    if type(name) is not str:
        return None
    kind = attribute_kind(type(obj), name)
    if kind[0] == SKIP or (tracker.fields is not None and name not in tracker.fields):
        return None
    if frame is None and _quiet(tracker):
        # Not recorded; the flight recorder, when on, keeps the new value (see _flight).
        return (_FLIGHT, tracker, kind) if _flight.append is not None else None
    return (tracker, frame, kind, read_kind(obj, name, kind))


# The first item of _before_change's answer for a change only the flight recorder keeps.
_FLIGHT = object()


def _after_change(obj: Any, name: str, pending: tuple[Any, ...], method: str) -> None:
    if pending[0] is None:
        _lazy_tracker(obj, method, None)
        return
    if pending[0] is _FLIGHT:
        note_assignment(pending[1], obj, name, read_kind(obj, name, pending[2]))
        return
    tracker, frame, kind, old = pending
    # Read back rather than trust the value given: the class's own __setattr__ may
    # have stored something else.
    new = read_kind(obj, name, kind)
    seq = next(tracker.counter)
    if frame is not None:
        note(frame, name, old, new, seq)
        return
    # Outside any call of the object: recorded at once, as a call of its own.
    outside: Frame = [CLOSED, tracker, None, [name, old, new, seq], time.time_ns(), None, None]
    record_frame(outside, obj, method)


def note(frame: Frame, name: str, old: Any, new: Any, seq: int) -> None:
    """Note in its frame that ``name`` went from ``old`` to ``new`` (see F_ASSIGNED):
    the first value seen and the last stay, with the sequence number of the last."""
    assigned = frame[F_ASSIGNED]
    if assigned is None:
        frame[F_ASSIGNED] = [name, old, new, seq]
    elif type(assigned) is list:
        if assigned[0] == name:
            assigned[2] = new
            assigned[3] = seq
        else:
            frame[F_ASSIGNED] = {assigned[0]: assigned[1:], name: [old, new, seq]}
    else:
        entry = assigned.get(name)
        if entry is None:
            assigned[name] = [old, new, seq]
        else:
            entry[1] = new
            entry[2] = seq


def _make_setattr(orig: Any) -> Any:
    frames_get, kinds_get, trackers_get = _frames.get, KINDS.get, TRACKERS.get
    dict_of = object.__getattribute__  # never the class's own __getattribute__
    # object.__setattr__ stores a plain attribute in the instance's __dict__ and never
    # replaces that dict: the one read before the assignment is the one to read after.
    same_dict = orig is object.__setattr__
    last_context, missing = LAST_CONTEXT, MISSING
    # Frame slots by number below (0 oid, 1 tracker, 3 assigned), as in _fastwrap.

    def __setattr__(self: Any, name: str, value: Any) -> None:  # noqa: N807
        if not RT.active:
            orig(self, name, value)
            return
        pending: tuple[Any, ...] | None = None
        frame: Frame | None = None  # the fast path's frame, when it applies
        old: Any = missing
        # The two common cases inlined: inside a method of this object (the only frame
        # open, a plain attribute in its __dict__), or in a trace head sampling dropped
        # (where methods push no frame). Every assignment of a traced object comes here,
        # so the checks are ordered to say "nothing to do" soonest.
        try:
            frames = frames_get()
            if frames:
                # The innermost frame (the one _find_frame would find first, if it is ours).
                top = frames[-1]
                tracker = top[1]
                if top[0] == id(self) and tracker is not None:
                    per_class = kinds_get(type(self))
                    kind = per_class.get(name) if per_class is not None else None
                    if kind is not None and kind[0] == IN_DICT and tracker.fields is None:
                        frame = top
                        own = dict_of(self, "__dict__")
                        old = own.get(name, missing)
                    else:
                        pending = _before_change(self, name)
                else:
                    pending = _before_change(self, name)
            else:
                call = last_context[0]
                tracker = None
                if call[2] == 1 and call[0] is context_get():  # 1: UNSAMPLED
                    tracker = trackers_get(id(self))
                    # Already to resync and no flight recorder: nothing more to note,
                    # whatever the attribute (the attribute's kind is not even looked up).
                    if tracker is not None and (
                        tracker.pending_snapshot is None or _flight.append is not None
                    ):
                        per_class = kinds_get(type(self))
                        kind = per_class.get(name) if per_class is not None else None
                        if _flight.append is not None:
                            note_assignment(tracker, self, name, value, kind)
                        if tracker.pending_snapshot is None:
                            if kind is None or kind[0] != IN_DICT or tracker.fields is not None:
                                tracker = None  # not a plain field: the long way
                            else:
                                # _quiet(), its usual case inlined: resync later.
                                tracker.pending_snapshot = "resync"
                if tracker is None:
                    pending = _before_change(self, name)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
            frame = pending = None
        orig(self, name, value)  # the program's exceptions pass through untouched
        if frame is not None:
            # _after_change inlined for the fast path.
            try:
                # Read back rather than trust the value given: the class's own
                # __setattr__ may have stored something else.
                if not same_dict:
                    own = dict_of(self, "__dict__")
                new = own.get(name, missing)
                seq = next(tracker.counter)
                if frame[3] is None:  # note(), its usual case inlined
                    frame[3] = [name, old, new, seq]
                else:
                    note(frame, name, old, new, seq)
            except Exception:  # noqa: BLE001 -- the guard logs it
                log_internal_error()
        elif pending is not None:
            try:
                _after_change(self, name, pending, "__setattr__")
            except Exception:  # noqa: BLE001 -- the guard logs it
                log_internal_error()

    setattr(__setattr__, _WRAPPED_MARK, True)
    return __setattr__


def _make_delattr(orig: Any) -> Any:
    def __delattr__(self: Any, name: str) -> None:  # noqa: N807
        if not RT.active:
            orig(self, name)
            return
        try:
            pending = _before_change(self, name)
        except Exception:  # noqa: BLE001 -- the guard logs it
            log_internal_error()
            pending = None
        orig(self, name)
        if pending is not None:
            try:
                _after_change(self, name, pending, "__delattr__")
            except Exception:  # noqa: BLE001 -- the guard logs it
                log_internal_error()

    setattr(__delattr__, _WRAPPED_MARK, True)
    return __delattr__


def _make_del(orig: Any) -> Any:
    def __del__(self: Any) -> None:  # noqa: N807
        TRACKERS.pop(id(self), None)
        if orig is not None:
            orig(self)

    setattr(__del__, _WRAPPED_MARK, True)
    return __del__


# ---------------------------------------------------------------------------- patching


def _is_wrapped(attr: Any) -> bool:
    return bool(getattr(attr, _WRAPPED_MARK, False))


def patch_class(cls: type, *, all_instances: bool) -> ClassInfo:
    """Patch ``cls`` (once); ``all_instances`` turns on tracing of every instance."""
    if not isinstance(cls, type) or not (cls.__flags__ & _HEAPTYPE):
        raise TypeError(
            f"procscope.trace_state cannot trace {getattr(cls, '__qualname__', cls)!r}: "
            "only classes defined in Python can be patched"
        )
    info = cls.__dict__.get(INFO_ATTR)
    if info is None:
        info = ClassInfo(cls)
        _patch_methods(cls)
        _patch_hooks(cls, info)
        type.__setattr__(cls, INFO_ATTR, info)
    if all_instances and not info.all_instances:
        init = cls.__dict__.get("__init__")
        if init is not None and inspect.isfunction(init) and not _is_wrapped(init):
            type.__setattr__(cls, "__init__", _wrap_init(init))
        elif init is None and getattr(cls, "__init__") is not object.__init__:  # noqa: B009
            inherited = getattr(cls, "__init__")  # noqa: B009
            if not _is_wrapped(inherited):
                type.__setattr__(cls, "__init__", _wrap_init(inherited))
        info.all_instances = True
    return info  # type: ignore[no-any-return]


def _patch_methods(cls: type) -> None:
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, attr in list(klass.__dict__.items()):
            if name in seen:
                continue
            seen.add(name)
            if name.startswith("_") or not inspect.isfunction(attr) or _is_wrapped(attr):
                continue
            if inspect.isgeneratorfunction(attr) or inspect.isasyncgenfunction(attr):
                continue  # changes while iterating are seen by the hooks, outside a frame
            type.__setattr__(cls, name, wrap_method(attr, name))


def _patch_hooks(cls: type, info: ClassInfo) -> None:
    # The hooks take the name, documentation and signature of what they replace, and say
    # where they are installed (pickle, inspect and help() see the class's own).
    current_set = cls.__setattr__
    if not _is_wrapped(current_set):
        info.orig_setattr = current_set
        hook = keep_identity(_make_setattr(current_set), current_set, cls, "__setattr__")
        type.__setattr__(cls, "__setattr__", hook)
    current_del = cls.__delattr__
    if not _is_wrapped(current_del):
        info.orig_delattr = current_del
        hook = keep_identity(_make_delattr(current_del), current_del, cls, "__delattr__")
        type.__setattr__(cls, "__delattr__", hook)
    if cls.__weakrefoffset__ == 0:
        # No weak references to these objects: forget their trackers when they die.
        existing = cls.__dict__.get("__del__") or getattr(cls, "__del__", None)
        if not _is_wrapped(existing):
            type.__setattr__(cls, "__del__", _make_del(existing))


def trace_instance(obj: Any, name: str | None, fields: frozenset[str] | None) -> Any:
    """Start tracing one object (its class is patched once, for it alone)."""
    patch_class(type(obj), all_instances=False)
    tracker = TRACKERS.get(id(obj))
    if tracker is not None:
        # Already traced (its class is decorated, or traced before): take the new name
        # and fields, and start the history under that name with a snapshot now.
        if fields is not None:
            tracker.fields = fields
        if name is not None and name != tracker.name_of(obj):
            tracker.given_name = name
            tracker.pending_snapshot = "renamed"
            try:
                record_start(tracker, obj, "trace_state")
            except Exception:  # noqa: BLE001 -- the guard logs it
                log_internal_error()
        return obj
    tracker = new_tracker(obj, name, fields)
    try:
        record_start(tracker, obj, "trace_state")
    except Exception:  # noqa: BLE001 -- the guard logs it
        log_internal_error()
    return obj


__all__ = ["ClassInfo", "patch_class", "trace_instance", "wrap_method"]
