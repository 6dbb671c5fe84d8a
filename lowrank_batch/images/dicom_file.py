"""The archived DICOM file itself: its non-pixel bytes kept at encode, the file rebuilt at decode.

Keep (`keep_file`): the Part 10 file with its Pixel Data value cut out (dicom_bytes.KeptFile),
plus, for uncompressed files, what the decoded pixels alone do not say (a XOR residue).

Rebuild (`rebuild_dicom`), from the decoded frames and the kept header:
  - lossless, uncompressed source (explicit/implicit VR, little/big endian): the pixels are
    written back in the file's own layout and spliced in: the very file archived, checked
    against its recorded SHA-256 (a mismatch is an error, as a pixel checksum is);
  - otherwise (an encapsulated source, or a lossy / near-lossless export) only the elements
    that must change are rewritten, each other element keeps its bytes: Pixel Data (in the
    source's own transfer syntax where a lossless encoder for it is installed, its result
    checked by decoding it back; else uncompressed, the syntax change stated), the transfer
    syntax, PhotometricInterpretation where pydicom decoded YBR to RGB, and what a lossy
    export must declare (dicom.declare_lossy).
"""

from __future__ import annotations

import copy
import hashlib
import io
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import ChecksumMismatchError, InvalidImageError
from .dicom_bytes import (DEFLATED, EXPLICIT_BE, IMPLICIT_LE, ITEM, NATIVE_SYNTAXES, PIXEL_DATA, KeptFile,
                          layout, native_pixel_bytes, walk, xor_fit)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _lossless_reencoders() -> dict[str, dict]:
    """Encapsulated syntaxes that can be written losslessly here, with the options that make it
    so: pydicom's encoders, and JPEG Lossless (process 14, first-order prediction, which
    selection value 1 is, for both syntaxes) through imagecodecs' libjpeg-turbo."""
    from pydicom import uid

    return {uid.RLELossless: {}, uid.JPEGLSLossless: {}, uid.JPEGLSNearLossless: {"jls_error": 0},
            uid.JPEG2000Lossless: {}, uid.JPEGLosslessSV1: {"imagecodecs": True},
            uid.JPEGLossless: {"imagecodecs": True}}


@dataclass(frozen=True)
class RebuiltDicom:
    data: bytes
    syntax: str  # the transfer syntax written
    identical: bool  # byte for byte the archived file (its SHA-256 is the recorded one)
    note: str  # what it is, for the output; never an element value


def splices_back(kept: KeptFile) -> bool:
    """Whether a lossless decode of this file gives back its exact bytes (an uncompressed source)."""
    return layout(kept.shell).syntax in NATIVE_SYNTAXES


def keep_file(data: bytes, ds, frames: np.ndarray) -> tuple[KeptFile | None, str]:
    """The kept header of a file pydicom read as `ds` (its PixelData still there) with decoded
    frames (F, rows, cols[, samples]); or (None, why not) for a file it cannot keep exactly.
    Never fails the file: its pixels and JSON are archived whatever its bytes look like."""
    try:
        return _keep_file(data, ds, frames)
    except Exception:  # odd bytes the walker or the layout did not foresee: keep what can be kept
        return None, "its element layout could not be followed"


def _keep_file(data: bytes, ds, frames: np.ndarray) -> tuple[KeptFile | None, str]:
    lay = layout(data)
    if lay.syntax == DEFLATED:
        return None, "its data set is deflated"
    elements = walk(data, lay.dataset_start, len(data), lay.little, lay.implicit)
    if [e.tag for e in elements] != list(ds.keys()):  # the walker must see what pydicom saw
        return None, "its element layout could not be followed"
    pixel = next((e for e in elements if e.tag == PIXEL_DATA), None)
    value = bytes(data[pixel.value:pixel.end]) if pixel is not None else b""
    if pixel is None or not value.startswith(ds.PixelData):
        return None, "its pixel data could not be located"
    shell = data[:pixel.value] + data[pixel.end:]
    if lay.syntax not in NATIVE_SYNTAXES:
        group, element, length = struct.unpack_from("<HHI", value, 0) if len(value) >= 8 else (0, 0, 0)
        has_bot = (group << 16 | element) == ITEM and length > 0
        return KeptFile(shell, pixel.start, pixel.value, len(value), has_offset_table=has_bot), ""
    bits, planar = int(ds.BitsAllocated), int(ds.get("PlanarConfiguration", 0) or 0)
    best = None
    # signed values are stored sign-extended or as their BitsStored bits only: the one that fits
    for mask in (0, int(ds.BitsStored)) if _signed(ds) else (0,):
        serial = native_pixel_bytes(frames, bits, planar, lay.little, _swap_words(lay, pixel.vr, bits),
                                    _signed(ds), mask)
        residue = xor_fit(serial, len(value), value)
        differing = np.count_nonzero(np.frombuffer(residue, np.uint8))
        if best is None or differing < best[0]:
            best = differing, (residue if differing else b""), bool(mask)
    _, residue, masked = best
    return KeptFile(shell, pixel.start, pixel.value, len(value), residue, masked=masked), ""


def _swap_words(lay, vr: bytes | None, bits_allocated: int) -> bool:
    return not lay.little and bits_allocated <= 8 and vr == b"OW"


def _signed(ds) -> bool:
    return int(ds.get("PixelRepresentation", 0) or 0) == 1


def rebuild_dicom(frames: list[np.ndarray], kept_blob: bytes, file_sha256: str | None, meta: dict,
                  mode: str = "lossless", ratio: float | None = None, name: str = "") -> RebuiltDicom:
    """The DICOM file of decoded `frames` (in order) from its kept header (see module doc)."""
    from .dicom import quiet_pydicom

    kept = KeptFile.unpack(kept_blob, name)
    with quiet_pydicom():
        try:
            return _rebuild(frames, kept, file_sha256, meta, mode, ratio, name)
        except (InvalidImageError, ChecksumMismatchError):
            raise
        except Exception as exc:  # pydicom's messages can quote element values: the type only
            raise InvalidImageError(f"{name}: cannot rebuild the DICOM file ({type(exc).__name__} while "
                                    "writing its elements)") from None


def _rebuild(frames, kept: KeptFile, file_sha256, meta, mode, ratio, name) -> RebuiltDicom:
    from pydicom import dcmread
    from pydicom.uid import UID

    lay = layout(kept.shell)
    arr = np.stack([np.asarray(f) for f in frames])
    ds0 = dcmread(io.BytesIO(kept.shell[:kept.element_start] + kept.shell[kept.cut:]))
    source = UID(lay.syntax)
    if mode == "lossless" and lay.syntax in NATIVE_SYNTAXES:
        value = _native_value(arr, ds0, lay, kept)
        data = kept.splice(xor_fit(value, kept.cut_length, kept.residue))
        if file_sha256 and hashlib.sha256(data).hexdigest() != file_sha256:
            raise ChecksumMismatchError(f"{name}: the rebuilt DICOM file's SHA-256 differs from the archived "
                                        "file's (its kept header or residue is damaged)")
        return RebuiltDicom(data, lay.syntax, bool(file_sha256), "byte-identical to the archived file"
                            if file_sha256 else "the archived bytes (no file SHA-256 on record)")
    attempts = []
    if lay.syntax not in NATIVE_SYNTAXES and source in _lossless_reencoders() and _encoder_available(source):
        attempts.append(source)
    attempts.append(lay.syntax if lay.syntax in NATIVE_SYNTAXES else
                    (IMPLICIT_LE if lay.implicit else EXPLICIT_LE))  # the data set's bytes stay valid
    for target in attempts:
        try:
            data, changed = _edited_file(arr, kept, lay, ds0, meta, mode, ratio, UID(target))
        except _Unencodable:
            continue
        identical = bool(file_sha256) and hashlib.sha256(data).hexdigest() == file_sha256
        return RebuiltDicom(data, str(target), identical, _note(identical, source, UID(target), changed, mode,
                                                           len(attempts) > 1))
    raise InvalidImageError(f"{name}: cannot rebuild the DICOM file")  # the native attempt always returns


def _encoder_available(syntax) -> bool:
    if _lossless_reencoders()[syntax].get("imagecodecs"):
        import importlib.util

        return importlib.util.find_spec("imagecodecs") is not None  # an optional dependency
    from pydicom.pixels import get_encoder

    try:
        return get_encoder(syntax).is_available
    except (NotImplementedError, ValueError):
        return False


class _Unencodable(Exception):
    """The source's syntax could not be written losslessly here (its encoder refused, or its
    output does not decode to the same pixels)."""


def _note(identical: bool, source, target, changed: list[str], mode: str, tried_source: bool) -> str:
    if identical:
        return "byte-identical to the archived file"
    kept = "every other element as archived"
    what = f"; changed: {', '.join(changed)}" if changed else ""
    if target != source:
        reason = ("its encoder could not write these pixels exactly" if tried_source else
                  "a lossy syntax, not written again" if _is_lossy(source) else "no encoder for it installed")
        return f"transfer syntax changed from {source.name} to {target.name} ({reason}); {kept}{what}"
    if mode != "lossless":
        return f"{mode}: declared lossy, pixels as decoded; {kept}{what}"
    return f"pixels re-encoded as {target.name} (same pixels, other bytes); {kept}{what}"


def _is_lossy(syntax) -> bool:
    from .dicom import _is_lossy_syntax

    return _is_lossy_syntax(syntax)


def _edited_file(arr, kept: KeptFile, lay, ds0, meta, mode, ratio, target) -> tuple[bytes, list[str]]:
    """The file with new pixels in `target` syntax and only the elements that must change
    rewritten; (bytes, keywords of the changed elements)."""
    from pydicom.uid import generate_uid

    from .dicom import declare_lossy

    ds1 = copy.deepcopy(ds0)
    decoded_pi = meta.get("PhotometricInterpretation")
    if decoded_pi and str(ds0.get("PhotometricInterpretation", "")) != decoded_pi and not target.is_compressed:
        ds1.PhotometricInterpretation = decoded_pi  # pydicom gave YBR back as RGB: say what is stored
    if not target.is_compressed:
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):  # encapsulated only
            if keyword in ds1:
                del ds1[keyword]
        if meta.get("source_lossy_syntax") and "LossyImageCompression" not in ds1:
            ds1.LossyImageCompression = "01"  # the syntax said it; the pixels still are lossy-compressed
    if mode != "lossless":
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(f).tobytes() for f in arr)).hexdigest()
        declare_lossy(ds1, mode, ratio, generate_uid, digest)
    if target.is_compressed:
        pixel = _encapsulated_element(arr, kept, ds1, target)
    else:
        header = kept.shell[kept.element_start:kept.cut] if target == lay.syntax else None
        pixel = _native_element(arr, ds1, target, header, int(ds1.BitsStored) if header and kept.masked else 0)
    ds1.file_meta.TransferSyntaxUID = target
    meta_start = lay.meta[0].start if lay.meta else lay.dataset_start
    meta_pieces = _edited(kept.shell, lay.meta, ds0.file_meta, ds1.file_meta, True, False)
    meta_pieces = _with_group_length(meta_pieces)
    pieces = [(e.tag, kept.shell[e.start:e.end]) for e in walk(kept.shell, lay.dataset_start, kept.element_start,
                                                                lay.little, lay.implicit)]
    pieces.append((PIXEL_DATA, pixel))
    pieces += [(e.tag, kept.shell[e.start:e.end]) for e in walk(kept.shell, kept.cut, len(kept.shell),
                                                                 lay.little, lay.implicit)]
    changed = _changed_tags(ds0, ds1) | _changed_tags(ds0.file_meta, ds1.file_meta)
    data_pieces = _replace(pieces, ds1, changed - {PIXEL_DATA}, lay.little, lay.implicit)
    data = kept.shell[:meta_start] + b"".join(b for _, b in meta_pieces) + b"".join(b for _, b in data_pieces)
    if target.is_compressed:
        _check_decodes_back(data, arr)
    from pydicom.datadict import keyword_for_tag

    names = sorted(keyword_for_tag(t) or f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in changed)
    return data, names


def _native_value(arr, ds, lay, kept: KeptFile) -> bytes:
    vr = kept.shell[kept.element_start + 4:kept.element_start + 6] if not lay.implicit else None
    return native_pixel_bytes(arr, int(ds.BitsAllocated), int(ds.get("PlanarConfiguration", 0) or 0),
                              lay.little, _swap_words(lay, vr, int(ds.BitsAllocated)), _signed(ds),
                              int(ds.BitsStored) if kept.masked else 0)


def _native_element(arr, ds1, target, header: bytes | None, mask_bits: int) -> bytes:
    """Pixel Data uncompressed in target's layout: the source's own header (VR kept) with the
    new length, or a new one (OB for 8 bits and fewer, else OW) after a syntax change."""
    little = target != EXPLICIT_BE
    implicit = target == IMPLICIT_LE
    if header is not None:
        vr = header[4:6] if not implicit else None
    else:
        vr = b"OB" if int(ds1.BitsAllocated) <= 8 else b"OW"
    bits = int(ds1.BitsAllocated)
    value = native_pixel_bytes(arr, bits, int(ds1.get("PlanarConfiguration", 0) or 0), little,
                               not little and bits <= 8 and vr == b"OW", _signed(ds1), mask_bits)
    value += b"\x00" * (len(value) % 2)
    e = "<" if little else ">"
    tag = struct.pack(e + "HH", 0x7FE0, 0x0010)
    if implicit:
        return tag + struct.pack(e + "I", len(value)) + value
    return tag + vr + b"\x00\x00" + struct.pack(e + "I", len(value)) + value


def _encapsulated_element(arr, kept: KeptFile, ds1, target) -> bytes:
    """Pixel Data encoded in target (one fragment per frame, the source's offset tables
    mirrored), with the source's own element header; _Unencodable when that cannot be done."""
    from pydicom.encaps import encapsulate, encapsulate_extended
    from pydicom.pixels import get_encoder
    from pydicom.pixels.utils import as_pixel_options

    options = dict(_lossless_reencoders()[target])
    try:
        if options.pop("imagecodecs", False):
            encoded = _jpeg_lossless_frames(arr, ds1)
        else:
            encoder = get_encoder(target)
            opts = as_pixel_options(ds1, **options)
            source = arr if int(opts.get("number_of_frames", 1)) > 1 else arr[0]
            encoded = list(encoder.iter_encode(source, **opts))
    except _Unencodable:
        raise
    except Exception:  # the encoder refuses this data (its range, its colour model...) or is missing
        raise _Unencodable() from None
    if "ExtendedOffsetTable" in ds1:
        value, ds1.ExtendedOffsetTable, ds1.ExtendedOffsetTableLengths = encapsulate_extended(encoded)
    else:
        value = encapsulate(encoded, has_bot=kept.has_offset_table)
    return kept.shell[kept.element_start:kept.cut] + value + SEQUENCE_DELIMITER


def _jpeg_lossless_frames(arr: np.ndarray, ds) -> list[bytes]:
    import imagecodecs

    bits = int(ds.BitsStored)
    if _signed(ds):  # JPEG codes the stored bit pattern; pydicom reads the sign back from the elements
        arr = (arr.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint16 if bits > 8 else np.uint8)
    return [imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1, bitspersample=bits) for frame in arr]


def _check_decodes_back(data: bytes, arr: np.ndarray) -> None:
    """A re-encoded file must give back exactly the pixels it was made of."""
    from pydicom import dcmread

    try:
        decoded = dcmread(io.BytesIO(data)).pixel_array
    except Exception:
        raise _Unencodable() from None
    want = arr if arr.shape[0] > 1 else arr[0]
    if decoded.shape != want.shape or not np.array_equal(decoded, want):
        raise _Unencodable()


def _changed_tags(old, new) -> set[int]:
    """Top-level tags whose element differs (VR or value), is new, or is gone."""
    changed = set()
    for tag in set(old.keys()) | set(new.keys()):
        if tag not in old or tag not in new:
            changed.add(int(tag))
            continue
        a, b = old.get_item(tag), new.get_item(tag)
        if a is b or a == b:
            continue
        a, b = old[tag], new[tag]
        if a.VR != b.VR or a.value != b.value:
            changed.add(int(tag))
    return changed


def _edited(buf: bytes, elements, old, new, little: bool, implicit: bool) -> list[tuple[int, bytes]]:
    pieces = [(e.tag, buf[e.start:e.end]) for e in elements]
    return _replace(pieces, new, _changed_tags(old, new), little, implicit)


def _replace(pieces, new, changed: set[int], little: bool, implicit: bool) -> list[tuple[int, bytes]]:
    """pieces with the changed tags re-encoded from `new` (dropped where gone, new ones inserted
    before the first larger tag); every other piece untouched."""
    out = [(t, b) for t, b in pieces if t not in changed]
    for tag in sorted(changed):
        if tag not in new:
            continue
        encoded = _encode(new, tag, little, implicit)
        at = next((i for i, (t, _) in enumerate(out) if t > tag), len(out))
        out.insert(at, (tag, encoded))
    return out


def _encode(ds, tag: int, little: bool, implicit: bool) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    write_data_element(fp, ds[tag], getattr(ds, "_character_set", None))
    return fp.getvalue()


def _with_group_length(pieces: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The file meta group's (0002,0000) length, where it has one, fitted to its elements."""
    if not pieces or pieces[0][0] != 0x00020000:
        return pieces
    length = sum(len(b) for _, b in pieces[1:])
    head = pieces[0][1]
    return [(0x00020000, head[:8] + struct.pack("<I", length))] + pieces[1:]
