"""Image quality and rate metrics. PSNR's peak is 2**bits_stored - 1, as GUIDE § 5 counts it."""

from __future__ import annotations

import math

import numpy as np


def max_abs_error(original: np.ndarray, decoded: np.ndarray) -> int:
    return int(np.max(np.abs(original.astype(np.int64) - decoded.astype(np.int64)), initial=0))


def psnr(original: np.ndarray, decoded: np.ndarray, bits_stored: int) -> float:
    """PSNR in dB over peak 2**bits_stored - 1; inf for identical arrays."""
    diff = original.astype(np.float64).ravel()
    diff -= decoded.ravel()
    mse = float(np.dot(diff, diff)) / max(diff.size, 1)  # one temporary, even for large scans
    if mse == 0.0:
        return math.inf
    peak = float((1 << bits_stored) - 1)
    return 10.0 * math.log10(peak * peak / mse)


def ssim(original: np.ndarray, decoded: np.ndarray, bits_stored: int) -> float:
    """Mean SSIM (Gaussian window, as in Wang et al. 2004) via scikit-image."""
    from skimage.metrics import structural_similarity

    a = original.astype(np.float64)
    b = decoded.astype(np.float64)
    channel_axis = 2 if a.ndim == 3 else None
    win = min(7, min(a.shape[0], a.shape[1]) | 1)
    if win < 3:
        return 1.0 if np.array_equal(a, b) else float("nan")
    return float(
        structural_similarity(
            a, b, data_range=float((1 << bits_stored) - 1), channel_axis=channel_axis, win_size=win,
            gaussian_weights=win >= 7,
        )
    )


def bits_per_pixel(num_bytes: int, num_pixels: int) -> float:
    return 8.0 * num_bytes / num_pixels


def bd_rate(reference: list[dict], test: list[dict]) -> float:
    """Average bitrate change (%) of `test` against `reference` at equal PSNR (negative: saves bits).

    Cubic fit of log-rate against PSNR, integrated over the PSNR range both curves cover.
    """
    def fit(points):
        points = sorted((p for p in points if math.isfinite(p["psnr"]) and p["bpp"] > 0), key=lambda p: p["psnr"])
        if len(points) < 4:
            raise ValueError("a BD-rate needs four finite rate-distortion points per curve")
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
