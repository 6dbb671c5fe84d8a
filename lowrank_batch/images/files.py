"""Read and write single image files as numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidImageError

_PIL_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "RGB": np.uint8}


def read_image(path: str | Path) -> np.ndarray:
    """PNG/TIFF (8/16-bit grey, 8-bit RGB) or .npy as an array; clear error otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidImageError(f"{path}: not a readable .npy array ({exc})") from None
    try:
        with Image.open(path) as img:
            if img.mode not in _PIL_MODES:
                raise InvalidImageError(
                    f"{path}: image mode {img.mode} is not supported (use 8/16-bit greyscale or 8-bit RGB)"
                )
            return np.asarray(img).astype(_PIL_MODES[img.mode], copy=False)
    except InvalidImageError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{path}: cannot read image ({exc})") from None


def write_image(path: str | Path, array: np.ndarray) -> None:
    """Write PNG/TIFF (unsigned 8/16-bit) or .npy (any dtype)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        np.save(path, array, allow_pickle=False)
        return
    if array.dtype.kind == "i":
        raise InvalidImageError(f"{path}: signed data cannot be written as {path.suffix}; use .npy")
    if array.dtype == np.uint16 and array.ndim == 2:
        Image.fromarray(array.astype("<u2")).save(path)
    else:
        Image.fromarray(array).save(path)
