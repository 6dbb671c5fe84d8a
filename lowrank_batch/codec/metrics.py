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
