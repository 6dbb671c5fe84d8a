"""Rate-distortion points of a sampled image: ours (lossy, near-lossless, lossless, preview) and,
optionally, classic codecs on the same pixels; then pooled per modality."""

from __future__ import annotations

import math

import numpy as np

from ..codec import metrics

QUALITIES = (35.0, 40.0, 45.0, 50.0, 55.0)
NEAR_DELTAS = (1, 2, 4)


def our_points(codec, original: np.ndarray, bits: int) -> list[dict]:
    """One point per setting: bytes and PSNR against the original."""
    points = []

    def add(setting, enc, decoded, nbytes=None):
        psnr = metrics.psnr(original, decoded, bits)
        points.append({"codec": "ours", "setting": setting, "bytes": nbytes or len(enc.to_bytes()), "psnr": psnr})

    for q in QUALITIES:
        enc = codec.encode(original, bits, "lossy", quality=q)
        add(f"lossy {q:g} dB", enc, codec.decode(enc))
    for d in NEAR_DELTAS:
        enc = codec.encode(original, bits, "near-lossless", max_error=d)
        add(f"near-lossless {d}", enc, codec.decode(enc))
    enc = codec.encode(original, bits)
    add("lossless", enc, codec.decode(enc))
    latent, _ = enc.split()
    points.append({"codec": "ours (preview)", "setting": "preview of a lossless file", "bytes": len(latent),
                   "psnr": metrics.psnr(original, codec.decode(enc, preview=True), bits)})
    return points


def pooled(per_image: list[tuple[int, list[dict]]]) -> dict[str, list[dict]]:
    """(pixels, points) per image -> codec -> [{setting, bpp, psnr}] over all images.

    bpp = all bytes / all pixels; PSNR from the pixel-weighted mean of each image's MSE over its
    own peak (finite and monotonic where per-image means of dB are not)."""
    acc: dict[tuple[str, str], list] = {}
    for pixels, points in per_image:
        for p in points:
            a = acc.setdefault((p["codec"], p["setting"]), [0, 0, 0.0])
            a[0] += pixels
            a[1] += p["bytes"]
            a[2] += pixels * (0.0 if math.isinf(p["psnr"]) else 10 ** (-p["psnr"] / 10))
    curves: dict[str, list[dict]] = {}
    for (codec, setting), (pixels, nbytes, weighted) in sorted(acc.items()):
        mse = weighted / pixels
        curves.setdefault(codec, []).append({"setting": setting, "bpp": 8 * nbytes / pixels,
                                             "psnr": math.inf if mse == 0 else -10 * math.log10(mse)})
    return curves
