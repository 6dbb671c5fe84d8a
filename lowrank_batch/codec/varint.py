"""LEB128 varints for the small headers of the byte formats: unsigned, and zig-zag signed."""

from __future__ import annotations

from ..errors import CorruptStreamError


def write_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Return (value, next position); raise CorruptStreamError on truncation or overlong input."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise CorruptStreamError("byte string is truncated (in a varint)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CorruptStreamError("byte string is corrupt (varint too long)")


def write_signed(out: bytearray, v: int) -> None:
    """Zig-zag: 0, -1, 1, -2, ... as 0, 1, 2, 3, ..., then a varint."""
    write_varint(out, (v << 1) if v >= 0 else ((-v << 1) - 1))


def read_signed(data: bytes, pos: int) -> tuple[int, int]:
    u, pos = read_varint(data, pos)
    return (u >> 1) if not u & 1 else -((u + 1) >> 1), pos
