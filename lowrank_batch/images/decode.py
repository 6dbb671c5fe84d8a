"""Image file bytes -> pixel arrays (PNG/TIFF/JPEG via Pillow, DICOM via pydicom, NIfTI via nibabel).

One file can hold several images (frames of a multi-frame DICOM, slices of a volume): each
gets a suffix ("#0", "#1", ...) appended to the file's id.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InvalidImageError
from .dicom import read_dicom
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


def is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def decode_image_bytes(name: str, data: bytes) -> list[DecodedImage]:
    """Decode one file's bytes; InvalidImageError names the file and what is wrong."""
    if not data:
        raise InvalidImageError(f"{name}: file is empty")
    if is_dicom(data) or name.lower().endswith((".dcm", ".dicom")):
        return [DecodedImage(*frame) for frame in read_dicom(name, data)]
    if is_nifti(name):
        return [DecodedImage(*sl) for sl in read_nifti(name, data)]
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode not in _PIL_MODES:
                raise InvalidImageError(f"{name}: image mode {img.mode} is not supported "
                                        "(8/16-bit greyscale or 8-bit RGB)")
            dtype, bits = _PIL_MODES[img.mode]
            pixels = np.asarray(img).astype(dtype, copy=False)
            fmt = img.format
    except InvalidImageError:
        raise
    except Image.UnidentifiedImageError:
        raise InvalidImageError(f"{name}: not an image Pillow or pydicom can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    return [DecodedImage("", np.ascontiguousarray(pixels), bits, {"format": fmt})]


def metadata_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)
