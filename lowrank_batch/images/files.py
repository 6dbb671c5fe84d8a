"""Writing image files from numpy arrays (reading them is read.py's job)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ..errors import InvalidImageError

def image_bytes(array: np.ndarray, fmt: str, name: str = "image", bits_stored: int | None = None) -> bytes:
    """PNG/TIFF (unsigned 8/16-bit, bits preserved) or npy (any dtype) as bytes. A 16-bit grey
    PNG with `bits_stored` < 16 declares it in an sBIT chunk (significant bits), which readers
    of this package honour."""
    fmt = fmt.lower().lstrip(".")
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, array, allow_pickle=False)
        return buf.getvalue()
    if fmt not in ("png", "tif", "tiff"):
        raise InvalidImageError(f"{name}: unknown output format {fmt!r} (png, tiff or npy)")
    if array.dtype.kind == "i":
        raise InvalidImageError(f"{name}: signed data cannot be written as {fmt}; use npy")
    pil_format = "PNG" if fmt == "png" else "TIFF"
    if array.dtype == np.uint16 and array.ndim == 2:
        extra = {}
        if pil_format == "PNG" and bits_stored is not None and bits_stored < 16:
            if int(array.max(initial=0)) >> bits_stored:
                raise InvalidImageError(f"{name}: values exceed {bits_stored} bits")
            info = PngImagePlugin.PngInfo()
            info.add(b"sBIT", bytes([bits_stored]))
            extra["pnginfo"] = info
        Image.fromarray(array.astype("<u2")).save(buf, format=pil_format, **extra)
    else:
        Image.fromarray(array).save(buf, format=pil_format)
    return buf.getvalue()


def write_image(path: str | Path, array: np.ndarray, bits_stored: int | None = None) -> None:
    """Write PNG/TIFF (unsigned 8/16-bit) or .npy (any dtype), chosen by the suffix."""
    path = Path(path)
    path.write_bytes(image_bytes(array, path.suffix or "png", str(path), bits_stored))
