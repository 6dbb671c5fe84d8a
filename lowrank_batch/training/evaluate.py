"""Figures for trained weights on the corpus's validation regions, measured by the real coder.

Per modality: lossless bits per pixel, and lossy (bpp, PSNR) at several qualities, for any set
of codecs (base, base + adapter, ...); BD-rate between two lossy curves (Bjontegaard 2001).
"""

from __future__ import annotations

import numpy as np

from ..codec import metrics
from ..codec.codec import Codec
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
        total, psnrs = 0, []
        for _, a, bits in images:
            enc = codec.encode(a, bits, "lossy", quality=q)
            total += 8 * len(enc.to_bytes())
            psnrs.append(metrics.psnr(a, codec.decode(enc), bits))
        lossy.append({"quality": q, "bpp": total / pixels, "psnr": float(np.mean(psnrs))})
    return {"images": len(images), "pixels": pixels, "lossless_bpp": lossless_bits / pixels, "lossy": lossy}


def bd_rate(reference: list[dict], test: list[dict]) -> float:
    """Average bitrate change (%) of `test` against `reference` at equal PSNR (negative: saves bits).

    Cubic fit of log-rate against PSNR, integrated over the PSNR range both curves cover.
    """
    def fit(points):
        psnr = np.array([p["psnr"] for p in points])
        log_rate = np.log(np.array([p["bpp"] for p in points]))
        return np.polyfit(psnr, log_rate, 3), psnr.min(), psnr.max()

    (p_ref, lo_ref, hi_ref), (p_test, lo_test, hi_test) = fit(reference), fit(test)
    lo, hi = max(lo_ref, lo_test), min(hi_ref, hi_test)
    if hi <= lo:
        raise ValueError("the two rate-distortion curves do not overlap in PSNR")
    int_ref, int_test = np.polyint(p_ref), np.polyint(p_test)
    avg_diff = ((np.polyval(int_test, hi) - np.polyval(int_test, lo))
                - (np.polyval(int_ref, hi) - np.polyval(int_ref, lo))) / (hi - lo)
    return float((np.exp(avg_diff) - 1) * 100)
