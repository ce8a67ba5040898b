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


def varint(value: int) -> bytes:
    """A base-128 varint; a negative int64 is written as its 64-bit two's complement."""
    value &= _U64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def uint(number: int, value: int) -> bytes:
    """An int32/int64/uint32/uint64/enum field (varint)."""
    return key(number, _VARINT) + varint(value)


def boolean(number: int, value: bool) -> bytes:
    return key(number, _VARINT) + (b"\x01" if value else b"\x00")


def double(number: int, value: float) -> bytes:
    return key(number, _FIXED64) + _DOUBLE.pack(value)


def fixed64(number: int, value: int) -> bytes:
    return key(number, _FIXED64) + _FIXED.pack(value & _U64)


def string(number: int, value: str) -> bytes:
    # "replace": a lone surrogate (from a recorded repr) must not stop the export.
    return message(number, value.encode("utf-8", "replace"))


def message(number: int, body: bytes) -> bytes:
    """A nested message (or raw bytes): length-prefixed."""
    return key(number, _LENGTH) + varint(len(body)) + body
