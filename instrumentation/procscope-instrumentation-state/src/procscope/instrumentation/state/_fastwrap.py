"""Method wrappers with the wrapped method's own parameter list.

A wrapper ``def w(self, *args, **kwargs): return f(self, *args, **kwargs)`` packs a tuple
and a dict on every call and unpacks them again: about 0.13 µs, a quarter of all that a
traced call that changes nothing costs. So for a plain function, the wrapper is compiled
with the same parameters (names, kinds and defaults, read from its code object, never from
a ``__signature__`` or ``__wrapped__`` that could differ) and passes them on one by one.
Binding the arguments is then the wrapper's job: a call with wrong arguments raises the
same TypeError, with the same message, before any of procscope's code runs.

Defaults are the function's own objects (``__defaults__``/``__kwdefaults__`` copied onto
the wrapper), so a default that is a sentinel checked by identity still works. Functions
whose parameters we cannot reproduce (no positional ``self``, or names that clash with the
wrapper's own) get ``None`` here and the generic ``*args, **kwargs`` wrapper instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

_PREFIX = "_ps_"

_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08

# The body is the generic wrapper's (in _patch.wrap_method), with the common case inlined;
# frame slots by number: 0 oid, 2 frozen, 3 assigned, 5 token (see _patch.F_*); span
# kinds (the third item of a _runtime.LAST_CONTEXT tuple) 0 RECORDING, 1 UNSAMPLED.
_TEMPLATE = """
def _ps_make(_ps_func, _ps_method, _ps_rt, _ps_trackers_get, _ps_frames_get, _ps_frames_set,
             _ps_frames_reset, _ps_time_ns, _ps_enter, _ps_record_exit, _ps_log_error,
             _ps_context_get, _ps_last_context, _ps_context_kind,
             _ps_id, _ps_Exception):
    def _ps_wrapper({params}):
        if not _ps_rt.active:
            return _ps_func({call})
        try:
            _ps_context = _ps_context_get()
            _ps_call = _ps_last_context[0]
            if _ps_call[0] is not _ps_context:
                _ps_call = _ps_context_kind(_ps_context)
            if _ps_call[2] == 1:
                _ps_frame = None
            else:
                _ps_oid = _ps_id({self})
                _ps_tracker = _ps_trackers_get(_ps_oid)
                if (
                    _ps_tracker is not None
                    and not _ps_tracker.container_fields
                    and not _ps_frames_get()
                ):
                    _ps_frame = [_ps_oid, _ps_tracker, None, None,
                                 _ps_time_ns() if _ps_call[2] else 0, None, _ps_call[1]]
                    _ps_frame[5] = _ps_frames_set((_ps_frame,))
                else:
                    _ps_frame = _ps_enter({self})
        except _ps_Exception:
            _ps_log_error()
            _ps_frame = None
        if _ps_frame is None:
            return _ps_func({call})
        try:
            return _ps_func({call})
        finally:
            _ps_frames_reset(_ps_frame[5])
            _ps_frame[0] = 0
            if _ps_frame[3] is not None or _ps_frame[2] is not None:
                _ps_record_exit(_ps_frame, {self}, _ps_method)
    return _ps_wrapper
"""


def _parameters(func: Any) -> tuple[str, str, str] | None:
    """``(parameter list, call arguments, first parameter)`` of ``func``, or None."""
    code = getattr(func, "__code__", None)
    if code is None:
        return None
    n_positional = code.co_argcount
    n_posonly = code.co_posonlyargcount
    n_kwonly = code.co_kwonlyargcount
    if n_positional < 1:
        return None  # no positional self (def m(*args)): the generic wrapper
    names = list(code.co_varnames[: n_positional + n_kwonly])
    index = n_positional + n_kwonly
    star = star_star = None
    if code.co_flags & _CO_VARARGS:
        star = code.co_varnames[index]
        index += 1
    if code.co_flags & _CO_VARKEYWORDS:
        star_star = code.co_varnames[index]
    every = [*names, *(n for n in (star, star_star) if n is not None)]
    if any(not n.isidentifier() or n.startswith(_PREFIX) for n in every):
        return None
    params: list[str] = []
    call: list[str] = []
    for position, name in enumerate(names[:n_positional]):
        params.append(name)
        call.append(name)
        if n_posonly and position == n_posonly - 1:
            params.append("/")
    if star is not None:
        params.append(f"*{star}")
        call.append(f"*{star}")
    elif n_kwonly:
        params.append("*")
    for name in names[n_positional:]:
        params.append(name)
        call.append(f"{name}={name}")
    if star_star is not None:
        params.append(f"**{star_star}")
        call.append(f"**{star_star}")
    return ", ".join(params), ", ".join(call), names[0]


_COMPILED: dict[tuple[str, str, str], Callable[..., Any]] = {}


def exact_wrapper(func: Any, method: str, helpers: tuple[Any, ...]) -> Any:
    """A wrapper of ``func`` with its own parameters, or None (use the generic one).

    ``helpers``: what the body uses, in the order of _TEMPLATE's ``_ps_make`` from
    ``_ps_rt`` to ``_ps_context_kind``.
    """
    shape = _parameters(func)
    if shape is None:
        return None
    make = _COMPILED.get(shape)
    if make is None:
        params, call, self_name = shape
        source = _TEMPLATE.format(params=params, call=call, self=self_name)
        namespace: dict[str, Any] = {}
        exec(compile(source, "<procscope state wrapper>", "exec"), namespace)
        make = namespace["_ps_make"]
        _COMPILED[shape] = make
    wrapper = make(func, method, *helpers, id, Exception)
    wrapper.__defaults__ = func.__defaults__
    wrapper.__kwdefaults__ = dict(func.__kwdefaults__) if func.__kwdefaults__ else None
    if sys.version_info >= (3, 11):
        # Argument errors name the function's __qualname__ (functools.wraps sets it);
        # tracebacks and profilers name the code: the method's too.
        wrapper.__code__ = wrapper.__code__.replace(
            co_name=func.__code__.co_name, co_qualname=func.__code__.co_qualname
        )
    else:
        wrapper.__code__ = wrapper.__code__.replace(co_name=func.__code__.co_name)
    return wrapper


__all__ = ["exact_wrapper"]
