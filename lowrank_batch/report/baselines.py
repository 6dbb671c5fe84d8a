"""Classic codecs on the same images (imagecodecs): the rate-distortion points a report compares.

imagecodecs is in the `bench` extra; `report --baselines` says so when it is missing.
"""

from __future__ import annotations

import math

import numpy as np

from ..codec import metrics
from ..errors import InvalidParameterError

J2K_LEVELS = (35.0, 40.0, 45.0, 50.0, 55.0)  # OpenJPEG's quality layer (PSNR-like knob)
NEAR_DELTAS = (1, 2, 4)
LOSSLESS_CODECS = ("jpegls", "j2k", "htj2k", "jxl")


def imagecodecs():
    try:
        import imagecodecs as ic
    except ImportError:
        raise InvalidParameterError("--baselines needs imagecodecs: pip install 'lowrank-batch[bench]'") from None
    return ic


def as_unsigned(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Classic codecs get the same unsigned samples our codec codes (signed data offset)."""
    a = pixels
    if a.dtype.kind == "i":
        a = (a.astype(np.int32) + (1 << (bits - 1))).astype(np.uint16 if bits > 8 else np.uint8)
    return np.ascontiguousarray(a)


def classic_lossless(name: str, a: np.ndarray, bits: int) -> bytes:
    ic = imagecodecs()
    if name == "jpegls":
        return ic.jpegls_encode(a)
    if name == "j2k":
        return ic.jpeg2k_encode(a, level=0, reversible=True, bitspersample=bits, numthreads=1)
    if name == "htj2k":
        return ic.htj2k_encode(a, level=0, reversible=True)
    if name == "jxl":
        return ic.jpegxl_encode(a, lossless=True, effort=7, numthreads=1, bitspersample=bits)
    if name == "png":
        return ic.png_encode(a, level=9)
    raise ValueError(name)


def baseline_points(pixels: np.ndarray, bits: int) -> list[dict]:
    """(codec, setting, bytes, psnr) for one image: J2K lossy, JPEG-LS NEAR, and lossless codecs."""
    ic = imagecodecs()
    a = as_unsigned(pixels, bits)
    points = []
    for level in J2K_LEVELS:
        b = ic.jpeg2k_encode(a, level=level, reversible=False, bitspersample=bits, numthreads=1)
        points.append(_point("JPEG 2000", f"level {level:g}", b, metrics.psnr(a, ic.jpeg2k_decode(b), bits)))
    for d in NEAR_DELTAS:
        b = ic.jpegls_encode(a, level=d)
        points.append(_point("JPEG-LS", f"NEAR {d}", b, metrics.psnr(a, ic.jpegls_decode(b), bits)))
    for name in LOSSLESS_CODECS:
        label = {"jpegls": "JPEG-LS", "j2k": "JPEG 2000", "htj2k": "HTJ2K", "jxl": "JPEG XL"}[name]
        points.append(_point(label, "lossless", classic_lossless(name, a, bits), math.inf))
    return points


def _point(codec: str, setting: str, blob: bytes, psnr: float) -> dict:
    return {"codec": codec, "setting": setting, "bytes": len(blob), "psnr": psnr}
