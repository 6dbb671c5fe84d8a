"""Image file bytes -> pixel arrays (PNG/TIFF/JPEG via Pillow, DICOM via pydicom, NIfTI via nibabel).

One file can hold several images (frames of a multi-frame DICOM, slices of a volume): each
gets a suffix ("#0", "#1", ...) appended to the file's id.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import InvalidImageError
from .dicom import read_dicom_file
from .nifti import is_nifti, read_nifti

Image.MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs before allocating
_PIL_MODES = {"L": (np.uint8, 8), "I;16": (np.uint16, 16), "I;16B": (np.uint16, 16), "I;16L": (np.uint16, 16),
              "RGB": (np.uint8, 8)}


@dataclass
class DecodedImage:
    suffix: str  # "" or "#<frame>"
    pixels: np.ndarray
    bits_stored: int
    metadata: dict
    columns: dict = field(default_factory=dict)  # archive columns of the source file (DICOM: on frame 0)


def is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def decode_image_bytes(name: str, data: bytes) -> list[DecodedImage]:
    """Decode one file's bytes; InvalidImageError names the file and what is wrong."""
    if not data:
        raise InvalidImageError(f"{name}: file is empty")
    if is_dicom(data) or name.lower().endswith((".dcm", ".dicom")):
        dicom = read_dicom_file(name, data)
        images = [DecodedImage(*frame) for frame in dicom.frames]
        images[0].columns = {"dicom_header": dicom.header, "dicom_sha256": dicom.sha256}
        return images
    if is_nifti(name):
        return [DecodedImage(*sl) for sl in read_nifti(name, data)]
    _refuse_wide_colour_png(name, data)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            pages = getattr(img, "n_frames", 1)
            if pages > 1 and fmt != "TIFF":
                raise InvalidImageError(f"{name}: {fmt} with {pages} frames is not supported "
                                        "(palette animation; multi-page TIFF is)")
            out = []
            for page in range(pages):  # a multi-page TIFF: each page an image, "#k"
                img.seek(page)
                if img.mode not in _PIL_MODES:
                    raise InvalidImageError(f"{name}: image mode {img.mode} is not supported "
                                            "(8/16-bit greyscale or 8-bit RGB)")
                dtype, bits = _PIL_MODES[img.mode]
                pixels = np.ascontiguousarray(np.asarray(img).astype(dtype, copy=False))
                meta = {"format": fmt}
                if fmt == "PNG" and bits == 16:
                    bits = _significant_bits(data, pixels, meta)
                out.append(DecodedImage(f"#{page}" if pages > 1 else "", pixels, bits, meta))
    except InvalidImageError:
        raise
    except Image.UnidentifiedImageError:
        raise InvalidImageError(f"{name}: not an image Pillow or pydicom can read") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    return out


def png_sbit(data: bytes) -> int | None:
    """The significant bits a greyscale PNG declares in its sBIT chunk (12 for a 12-bit scan in
    16-bit samples), or None. Pillow does not read sBIT, so the chunks before IDAT are walked."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"sBIT" and length >= 1 and pos + 9 <= len(data):
            return data[pos + 8]
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _significant_bits(data: bytes, pixels: np.ndarray, meta: dict) -> int:
    """bits_stored of a 16-bit greyscale PNG: its sBIT where the values respect it, else 16
    (a lossless archive keeps every value; the ignored declaration is noted)."""
    declared = png_sbit(data)
    if declared is None or not 1 <= declared < 16:
        return 16
    if int(pixels.max(initial=0)) >> declared:
        meta["sbit_ignored"] = f"values exceed the {declared} significant bits declared: kept as 16-bit"
        return 16
    meta["sbit"] = declared
    return max(declared, 8)


def _refuse_wide_colour_png(name: str, data: bytes) -> None:
    """Pillow reads 16-bit colour PNGs as 8-bit (dropping the low bytes): refuse, never lose bits."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        depth, colour = data[24], data[25]
        if depth == 16 and colour in (2, 4, 6):
            kind = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}[colour]
            raise InvalidImageError(f"{name}: 16-bit {kind} PNG is not supported (it would lose its low "
                                    "8 bits); store 16-bit greyscale, or 8-bit RGB")


def metadata_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)
