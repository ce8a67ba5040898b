"""The few pieces of the protobuf wire format that a Perfetto trace needs, written by hand.

procscope writes Perfetto traces without the ``perfetto`` or ``protobuf`` packages: the
messages are few (TracePacket, TrackDescriptor, TrackEvent, DebugAnnotation) and the wire
format is simple: each field is a key (field number << 3 | wire type) and a value, a
varint, 8 bytes, or a length-prefixed run of bytes (strings and nested messages).
The tests parse what is written here with Perfetto's own protos.

A message is built as ``bytes`` by concatenating fields; a caller encodes the innermost
message first and nests it with :func:`message`.
"""

from __future__ import annotations

import struct

_VARINT = 0
_FIXED64 = 1
_LENGTH = 2

_DOUBLE = struct.Struct("<d")
_FIXED = struct.Struct("<Q")
_U64 = (1 << 64) - 1


# Every varint below 2**14 (field keys, lengths, small values), made once: encoding is
# most of an export's time, and nearly every varint in a trace is one of these.
_SMALL = [bytes((v,)) for v in range(0x80)] + [
    bytes(((v & 0x7F) | 0x80, v >> 7)) for v in range(0x80, 0x4000)
]


# 14 bits at a time, both bytes marked "more follows": for the large values (timestamps
# in nanoseconds, track ids) that take 9 or 10 bytes.
_MORE = [bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(0x4000)]


def varint(value: int) -> bytes:
    """A base-128 varint; a negative int64 is written as its 64-bit two's complement."""
    if 0 <= value < 0x4000:
        return _SMALL[value]
    value &= _U64
    parts = []
    while value >= 0x4000:
        parts.append(_MORE[value & 0x3FFF])
        value >>= 14
    parts.append(_SMALL[value])
    return b"".join(parts)


def key(number: int, wire_type: int) -> bytes:
    """A field's key (field numbers below 2048: a table lookup)."""
    return _SMALL[(number << 3) | wire_type]


def uint(number: int, value: int) -> bytes:
    """An int32/int64/uint32/uint64/enum field (varint)."""
    return _SMALL[number << 3] + varint(value)


def boolean(number: int, value: bool) -> bytes:
    return _SMALL[number << 3] + (b"\x01" if value else b"\x00")


def double(number: int, value: float) -> bytes:
    return _SMALL[(number << 3) | _FIXED64] + _DOUBLE.pack(value)


def fixed64(number: int, value: int) -> bytes:
    return _SMALL[(number << 3) | _FIXED64] + _FIXED.pack(value & _U64)


def string(number: int, value: str) -> bytes:
    # "replace": a lone surrogate (from a recorded repr) must not stop the export.
    body = value.encode("utf-8", "replace")
    return _SMALL[(number << 3) | _LENGTH] + varint(len(body)) + body


def message(number: int, body: bytes) -> bytes:
    """A nested message (or raw bytes): length-prefixed."""
    return _SMALL[(number << 3) | _LENGTH] + varint(len(body)) + body
