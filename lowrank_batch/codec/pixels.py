"""Pixel arrays in and out: validation, signed offsets, planes and the reversible colour transform.

The codec works on unsigned integer planes in [0, 2**bits_stored - 1]. Signed input (CT in
Hounsfield units) is shifted by 2**(bits_stored - 1); the offset is recorded so decode gives
back the original signed values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidImageError, InvalidParameterError

SUPPORTED_DTYPES = ("uint8", "uint16", "int8", "int16")
MIN_BITS, MAX_BITS = 8, 16


@dataclass(frozen=True)
class PixelLayout:
    """What decode needs to give back the caller's exact array."""

    shape: tuple[int, ...]
    dtype: str
    bits_stored: int
    offset: int  # added to the input before coding (2**(bits-1) for signed data, else 0)

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        return 1 if len(self.shape) == 2 else self.shape[2]

    @property
    def maxval(self) -> int:
        return (1 << self.bits_stored) - 1


def check_bits_stored(bits_stored: object) -> int:
    if isinstance(bits_stored, bool) or not isinstance(bits_stored, (int, np.integer)):
        raise InvalidParameterError(f"bits_stored must be an integer from 8 to 16, got {bits_stored!r}")
    if not MIN_BITS <= int(bits_stored) <= MAX_BITS:
        raise InvalidParameterError(f"bits_stored must be from {MIN_BITS} to {MAX_BITS}, got {bits_stored}")
    return int(bits_stored)


def validate(array: object, bits_stored: object) -> PixelLayout:
    """Check an input image and describe it; raise InvalidImageError naming what is wrong."""
    bits = check_bits_stored(bits_stored)
    if not isinstance(array, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(array).__name__}")
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        raise InvalidImageError(
            f"image contains NaN or Inf (dtype {array.dtype.name}); the codec takes integer samples only"
        )
    if array.dtype.name not in SUPPORTED_DTYPES:
        raise InvalidImageError(
            f"image dtype {array.dtype.name} is not supported: use one of {', '.join(SUPPORTED_DTYPES)} "
            "(integer samples of 8 to 16 bits)"
        )
    if array.ndim not in (2, 3):
        raise InvalidImageError(f"image must be 2-D (H, W) or 3-D (H, W, C), got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] not in (1, 3):
        raise InvalidImageError(f"image must have 1 or 3 channels, got {array.shape[2]} (shape {array.shape})")
    if array.size == 0:
        raise InvalidImageError(f"image is empty (shape {array.shape})")
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise InvalidImageError(f"image must be at least 2x2 pixels, got shape {array.shape}")
    if array.dtype.itemsize * 8 < bits:
        raise InvalidImageError(f"bits_stored={bits} does not fit in dtype {array.dtype.name}")
    signed = array.dtype.kind == "i"
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    amin, amax = int(array.min()), int(array.max())
    if amin < lo or amax > hi:
        kind = "signed" if signed else "unsigned"
        raise InvalidImageError(
            f"image values span [{amin}, {amax}] but {kind} bits_stored={bits} allows [{lo}, {hi}]"
        )
    return PixelLayout(tuple(int(s) for s in array.shape), array.dtype.name, bits, (1 << (bits - 1)) if signed else 0)


def to_planes(array: np.ndarray, layout: PixelLayout) -> np.ndarray:
    """(C, H, W) int64 planes of unsigned samples in [0, maxval]."""
    a = array.astype(np.int64) + layout.offset
    if a.ndim == 2:
        return a[None]
    return np.ascontiguousarray(np.moveaxis(a, 2, 0))


def from_planes(planes: np.ndarray, layout: PixelLayout) -> np.ndarray:
    """Inverse of to_planes: the caller's shape and dtype."""
    a = planes - layout.offset
    a = a[0] if len(layout.shape) == 2 else np.moveaxis(a, 0, 2)
    return np.ascontiguousarray(a.astype(layout.dtype))


def pixel_sha256(array: np.ndarray) -> str:
    """Digest of the pixel values, independent of memory layout and byte order."""
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    header = f"{a.dtype.str}{a.shape}".encode()
    return hashlib.sha256(header + a.tobytes()).hexdigest()


def rct_forward(planes: np.ndarray) -> np.ndarray:
    """JPEG 2000's reversible colour transform (R, G, B) -> (Y, Cb, Cr), exact in integers."""
    r, g, b = planes
    return np.stack(((r + 2 * g + b) >> 2, b - g, r - g))


def rct_inverse(planes: np.ndarray) -> np.ndarray:
    y, cb, cr = planes
    g = y - ((cb + cr) >> 2)
    return np.stack((cr + g, g, cb + g))


def rct_ranges(maxval: int) -> list[tuple[int, int]]:
    return [(0, maxval), (-maxval, maxval), (-maxval, maxval)]


def ycocg_forward(planes: np.ndarray, maxval: int) -> np.ndarray:
    """(R, G, B) -> (Y, Co, Cg), each offset into [0, maxval] so the low-rank core can code it.

    For lossy latents only: the integer halvings lose up to one grey level, which is
    negligible there and keeps the planes inside the core's range.
    """
    r, g, b = planes
    half = (maxval + 1) // 2
    return np.stack(((r + 2 * g + b) >> 2, ((r - b) >> 1) + half, ((2 * g - r - b) >> 2) + half))


def ycocg_inverse(planes: np.ndarray, maxval: int) -> np.ndarray:
    half = (maxval + 1) // 2
    y, co, cg = planes[0], planes[1] - half, planes[2] - half
    return np.clip(np.stack((y + co - cg, y + cg, y - co - cg)), 0, maxval)


def box_downsample(planes: np.ndarray, factor: int) -> np.ndarray:
    """(C, H, W) integer planes averaged over factor x factor blocks (edge blocks over what they
    hold), rounded half up: integer arithmetic, the same on every machine."""
    c, h, w = planes.shape
    hs, ws = -(-h // factor), -(-w // factor)
    padded = np.zeros((c, hs * factor, ws * factor), dtype=np.int64)
    padded[:, :h, :w] = planes
    sums = padded.reshape(c, hs, factor, ws, factor).sum(axis=(2, 4))
    counts = np.outer(np.bincount(np.arange(h) // factor), np.bincount(np.arange(w) // factor))
    return (2 * sums + counts) // (2 * counts)
