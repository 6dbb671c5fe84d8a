"""Figures for trained weights on the corpus's validation regions, measured by the real coder.

Per modality: lossless bits per pixel, and lossy (bpp, PSNR) at several qualities, for any set
of codecs (base, base + adapter, ...); BD-rate between two lossy curves (Bjontegaard 2001).
"""

from __future__ import annotations

import math

import numpy as np
from ..codec.codec import Codec
from ..codec.metrics import bd_rate  # noqa: F401  (lived here; training and tests import it from here)
from .corpus import load_images

QUALITIES = (36.0, 40.0, 44.0, 48.0, 52.0)


def validation_images(corpus, modality: str) -> list[tuple[str, np.ndarray, int]]:
    """(name, validation strip, bits) for every image of `modality` that has one."""
    return [(e.name, np.ascontiguousarray(a[:, e.val_from_col :]), e.bits_stored)
            for e, a in load_images(corpus, modality) if e.val_from_col < a.shape[1]]


def measure(codec: Codec, images: list[tuple[str, np.ndarray, int]], qualities=QUALITIES) -> dict:
    """Lossless bpp (pooled) and, per quality, lossy bpp (pooled) and mean PSNR."""
    pixels = sum(a.shape[0] * a.shape[1] for _, a, _ in images)
    lossless_bits = 0
    for _, a, bits in images:
        enc = codec.encode(a, bits)
        if not np.array_equal(codec.decode(enc), a):
            raise AssertionError("lossless round trip failed during evaluation")
        lossless_bits += 8 * len(enc.to_bytes())
    lossy = []
    for q in qualities:
        total, weighted_mse = 0, 0.0
        for _, a, bits in images:
            enc = codec.encode(a, bits, "lossy", quality=q)
            total += 8 * len(enc.to_bytes())
            error = codec.decode(enc).astype(np.float64) - a.astype(np.float64)
            weighted_mse += float(np.mean(error**2)) / ((1 << bits) - 1) ** 2 * a.shape[0] * a.shape[1]
        # PSNR of the pooled error (each image's MSE over its own peak, weighted by its pixels):
        # a set-level figure that stays finite and monotonic where per-image means do not
        mse = weighted_mse / pixels
        lossy.append({"quality": q, "bpp": total / pixels, "psnr": -10 * math.log10(mse) if mse > 0 else math.inf})
    return {"images": len(images), "pixels": pixels, "lossless_bpp": lossless_bits / pixels, "lossy": lossy}
