"""A DICOM file's bytes as received, kept without its pixel data value, and walked by element.

The archive keeps each DICOM file's non-pixel bytes exactly (the "shell": the Part 10 file
with the Pixel Data value cut out), so that a lossless decode gives back the very file that
was archived. This module is bytes only: where the elements of a file lie (a walker that
follows explicit and implicit VR, both byte orders, undefined lengths and nested items), the
kept header's storage format, and the pixel bytes of an uncompressed file.

Messages never quote element values (they can be patient data): offsets and tags only.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptStreamError

LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
IMPLICIT_LE, EXPLICIT_BE, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = {IMPLICIT_LE, "1.2.840.10008.1.2.1", EXPLICIT_BE}
MAGIC = b"LBDCMKP1"  # kept-header format, version 1
_HEAD = struct.Struct("<QQQQQB32s")  # element start, cut, cut length, shell zlen, residue zlen, flags, shell sha


class WalkError(ValueError):
    """The bytes do not follow DICOM's element layout where the walker looked."""


@dataclass(frozen=True)
class Element:
    tag: int
    start: int  # offset of its tag
    value: int  # offset of its value
    end: int  # past its value (for an undefined length: past its delimitation item)
    vr: bytes | None  # None for implicit VR and for items/delimiters


@dataclass(frozen=True)
class Layout:
    """Where a Part 10 file's parts are: meta group elements, and how its data set is encoded."""

    meta: list[Element]
    dataset_start: int
    syntax: str
    little: bool
    implicit: bool


def _element(buf: bytes, pos: int, little: bool, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, vr, length, value offset) of the element header at pos."""
    end = "<" if little else ">"
    if pos + 8 > len(buf):
        raise WalkError(f"element header at offset {pos} runs past the end")
    group, elem = struct.unpack_from(end + "HH", buf, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:  # items and delimiters have no VR in any syntax
        (length,) = struct.unpack_from(end + "I", buf, pos + 4)
        return tag, None, length, pos + 8
    vr = bytes(buf[pos + 4:pos + 6])
    if vr in LONG_VRS:
        if pos + 12 > len(buf):
            raise WalkError(f"element header at offset {pos} runs past the end")
        (length,) = struct.unpack_from(end + "I", buf, pos + 8)
        return tag, vr, length, pos + 12
    if not _looks_like_vr(vr):
        raise WalkError(f"element ({group:04X},{elem:04X}) at offset {pos} has no valid VR")
    (length,) = struct.unpack_from(end + "H", buf, pos + 6)
    return tag, vr, length, pos + 8


def _looks_like_vr(two: bytes) -> bool:
    return len(two) == 2 and two.isalpha() and two.isupper()


def walk(buf: bytes, pos: int, stop: int, little: bool, implicit: bool) -> list[Element]:
    """The elements from pos to stop, one level deep (sequences are stepped over whole)."""
    out = []
    while pos < stop:
        tag, vr, length, value = _element(buf, pos, little, implicit)
        if length == UNDEFINED:
            # an undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2)
            inner_implicit, inner_little = (True, True) if vr == b"UN" else (implicit, little)
            end = _skip_items(buf, value, inner_little, inner_implicit)
        else:
            end = value + length
        if end > stop:
            raise WalkError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {pos} runs past "
                            f"offset {stop}")
        out.append(Element(tag, pos, value, end, vr))
        pos = end
    return out


def _skip_items(buf: bytes, pos: int, little: bool, implicit: bool) -> int:
    """Past the sequence delimitation item of an undefined-length value starting at pos."""
    while True:
        tag, _, length, value = _element(buf, pos, little, implicit)
        if tag == SEQUENCE_END:
            return value
        if tag != ITEM:
            raise WalkError(f"expected an item at offset {pos}")
        if length != UNDEFINED:
            pos = value + length
            continue
        pos = value  # an undefined-length item: its elements, up to the item delimitation
        while True:
            tag, vr, length, value = _element(buf, pos, little, implicit)
            if tag == ITEM_END:
                pos = value
                break
            if length == UNDEFINED:
                inner = (True, True) if vr == b"UN" else (implicit, little)
                pos = _skip_items(buf, value, inner[1], inner[0])
            else:
                pos = value + length


def layout(buf: bytes) -> Layout:
    """The file meta group of a Part 10 file (with or without its 128-byte preamble), and how
    its data set is encoded: as its transfer syntax says, unless its first element says
    otherwise (some writers put implicit VR under an explicit syntax; pydicom reads them so)."""
    start = 132 if buf[128:132] == b"DICM" else 0
    meta, pos = [], start
    while pos + 8 <= len(buf) and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
        tag, vr, length, value = _element(buf, pos, True, False)  # always explicit VR little endian
        if length == UNDEFINED or value + length > len(buf):
            raise WalkError(f"file meta element at offset {pos} has a length past the end")
        meta.append(Element(tag, pos, value, value + length, vr))
        pos = value + length
    syntax_el = next((e for e in meta if e.tag == 0x00020010), None)
    if syntax_el is None:
        raise WalkError("no transfer syntax in the file meta group")
    syntax = bytes(buf[syntax_el.value:syntax_el.end]).rstrip(b"\x00 ").decode("ascii", "replace")
    implicit, little = syntax == IMPLICIT_LE, syntax != EXPLICIT_BE
    if pos + 6 <= len(buf) and syntax != DEFLATED:
        implicit = not _looks_like_vr(buf[pos + 4:pos + 6])
    return Layout(meta, pos, syntax, little, implicit)


@dataclass(frozen=True)
class KeptFile:
    """A DICOM file as received, less its Pixel Data value.

    `shell[:cut] + value + shell[cut:]` is the original file. For an uncompressed file the
    value is the decoded pixels written in the file's own layout, XOR `residue`: what the
    pixels alone do not say (bits above BitsStored, padding, YBR bytes decoded to RGB...),
    empty when the pixels say it all."""

    shell: bytes
    element_start: int  # offset of the Pixel Data element's tag
    cut: int  # offset of its value
    cut_length: int  # bytes cut out (encapsulated: with the sequence delimitation item)
    residue: bytes = b""
    has_offset_table: bool = False  # encapsulated: the source's Basic Offset Table was filled
    masked: bool = False  # uncompressed, signed: values were stored masked to BitsStored

    def pack(self) -> bytes:
        shell_z = zlib.compress(self.shell, 9)
        residue_z = zlib.compress(self.residue, 9) if self.residue else b""
        head = _HEAD.pack(self.element_start, self.cut, self.cut_length, len(shell_z), len(residue_z),
                          int(self.has_offset_table) | int(self.masked) << 1, hashlib.sha256(self.shell).digest())
        return MAGIC + head + shell_z + residue_z

    @classmethod
    def unpack(cls, blob: bytes, name: str) -> "KeptFile":
        """The kept header of `name`; CorruptStreamError when it is damaged (its digest checked)."""
        try:
            if blob[:len(MAGIC)] != MAGIC:
                raise ValueError("unknown format")
            start, cut, cut_length, shell_zlen, residue_zlen, flags, digest = _HEAD.unpack_from(blob, len(MAGIC))
            pos = len(MAGIC) + _HEAD.size
            if pos + shell_zlen + residue_zlen != len(blob):
                raise ValueError("wrong length")
            shell = zlib.decompress(blob[pos:pos + shell_zlen])
            residue = zlib.decompress(blob[pos + shell_zlen:]) if residue_zlen else b""
        except (ValueError, struct.error, zlib.error) as exc:
            raise CorruptStreamError(f"{name}: the kept DICOM header is damaged ({exc})") from None
        if hashlib.sha256(shell).digest() != digest:
            raise CorruptStreamError(f"{name}: the kept DICOM header is damaged (its SHA-256 differs from the "
                                     "one recorded with it)")
        if not start <= cut <= len(shell) or (residue and len(residue) != cut_length):
            raise CorruptStreamError(f"{name}: the kept DICOM header is damaged (offsets out of range)")
        return cls(shell, start, cut, cut_length, residue, bool(flags & 1), bool(flags & 2))

    def splice(self, value: bytes) -> bytes:
        return self.shell[:self.cut] + value + self.shell[self.cut:]


def pixel_element(buf: bytes, lay: Layout) -> Element:
    """The top-level Pixel Data element of a file."""
    for element in walk(buf, lay.dataset_start, len(buf), lay.little, lay.implicit):
        if element.tag == PIXEL_DATA:
            return element
    raise WalkError("no top-level Pixel Data element")


def native_pixel_bytes(frames: np.ndarray, bits_allocated: int, planar: int, little: bool,
                       swap_words: bool = False, signed: bool = False, mask_bits: int = 0) -> bytes:
    """Frames (F, rows, cols[, samples]) as an uncompressed file stores them (PS3.5 8.1-8.2),
    without the padding byte (except after swap_words). swap_words: 8-bit samples in an OW value of a big endian file.
    mask_bits: signed values written as their low BitsStored bits, zeros above (some writers do
    so; pydicom gives them back sign-extended)."""
    arr = np.ascontiguousarray(frames)
    if mask_bits and signed:
        arr = arr.astype(np.int64) & ((1 << mask_bits) - 1)
        signed = False
    if arr.ndim == 4 and planar == 1:  # colour-by-plane: all reds, then greens, then blues
        arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    if bits_allocated == 1:
        from pydicom.pixels import pack_bits

        return pack_bits(arr.astype(np.uint8).ravel(), pad=False)
    if bits_allocated == 8:
        data = arr.astype(np.int8 if signed else np.uint8).tobytes()
        if swap_words:  # the padding byte swaps in with the last sample: the value is whole words
            padded = data + b"\x00" * (len(data) % 2)
            data = np.frombuffer(padded, np.uint16).byteswap().tobytes()
        return data
    kind = "i" if signed else "u"
    return arr.astype(f"{'<' if little else '>'}{kind}{bits_allocated // 8}").tobytes()


def xor_fit(value: bytes, length: int, residue: bytes) -> bytes:
    """value cut or zero-padded to length, XOR residue (when there is one)."""
    value = value[:length] + b"\x00" * max(0, length - len(value))
    if not residue:
        return value
    return (np.frombuffer(value, np.uint8) ^ np.frombuffer(residue, np.uint8)).tobytes()
