"""Per-plane linear predictor (format 3): least-squares weights fitted to the image itself.

The context model blends its fixed sub-predictors by their recent errors; a linear predictor
fitted to the plane joins that blend (`context_model._linear`). Its integer weights travel in
the image header (about 15 bytes), so the decoder needs nothing but the header. Measured on the
dev corpus (benchmarks/lossless_options.py): -3.2% on the 484^2 MR, -2.0% on the held-out MR2,
-1.8% on the 512^2 CT, -0.2 to -0.5% on radiographs; the encoder keeps it only where it pays.

Pure numpy; the encoder alone runs it, so its floating point never reaches the decoder.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .context_model import LIN_CLASSES, LIN_PARITY_CLASSES, LIN_SHIFT, LIN_TAPS, LIN_TAPS_WIDE

# pixels the fit reads at most: 16K samples for 10 taps (4K per parity class) settle the weights;
# against 32K, the dev corpus (ct, mr, cr) came out 61 bytes smaller in total (per image -150 to
# +150 bytes) and a 512^2 CT encodes ~3.5 ms faster (earlier: 32K within 0.1% of 128K, 20% faster)
MAX_FIT_PIXELS = 1 << 14
MAX_WEIGHT = 1 << 15  # |weight| in units of 2**-LIN_SHIFT; larger is refused as corrupt


def _tap_differences(plane: np.ndarray, rows: np.ndarray, taps: np.ndarray = LIN_TAPS) -> tuple[np.ndarray, np.ndarray]:
    """(taps - W, x - W) for every pixel of the given rows; taps outside the image read as W,
    as in the coder (the first column's W differs from the coder's, which only blurs the fit).
    Only the rows the taps reach are converted and padded, not the whole plane."""
    h, w = plane.shape
    pad = 3

    def rows_at(di: int) -> np.ndarray:
        # rows + di, columns edge-padded; a row above the image is clipped (its taps read W below)
        return np.pad(plane[np.clip(rows + di, 0, h - 1)].astype(np.float64), ((0, 0), (pad, pad)), mode="edge")

    shifted = {di: rows_at(di) for di in sorted(set(taps[:, 0].tolist()) | {0})}
    west = shifted[0][:, pad - 1 : pad - 1 + w]
    cols = np.arange(w)[None, :]
    columns = []
    for di, dj in taps.tolist():
        outside = (rows[:, None] + di < 0) | (cols + dj < 0) | (cols + dj >= w)
        columns.append(np.where(outside, west, shifted[di][:, pad + dj : pad + dj + w]) - west)
    return np.stack(columns, axis=-1).reshape(-1, len(taps)), (shifted[0][:, pad : pad + w] - west).ravel()


def _samples(plane: np.ndarray, taps: np.ndarray = LIN_TAPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(taps - W, x - W, position parity 2*(row & 1) + (col & 1)) of the pixels the fit reads:
    evenly spaced rows of a large plane (the weights settle long before), flat pixels left out."""
    return _busy(*_all_samples(plane, taps))


def _all_samples(plane: np.ndarray, taps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = plane.shape
    rows = np.arange(h)
    if h * w > MAX_FIT_PIXELS:
        rows = np.unique(np.linspace(0, h - 1, max(1, MAX_FIT_PIXELS // w)).astype(np.int64))
    a, y = _tap_differences(plane, rows, taps)
    parity = (2 * (rows[:, None] & 1) + (np.arange(w)[None, :] & 1)).ravel()
    return a, y, parity


def _busy(a: np.ndarray, y: np.ndarray, parity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    busy = np.abs(a).sum(axis=1) > 0
    return a[busy], y[busy], parity[busy]


def _irls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Iteratively reweighted least squares towards least absolute error (residual coders pay
    for |error|, and edges would dominate a plain squared fit)."""
    weights = np.ones(len(y))
    coef = np.zeros(a.shape[1])
    for _ in range(3):  # normal equations: 10 x 10, far cheaper than lstsq on the samples
        aw = a * weights[:, None]
        gram = aw.T @ a + 1e-6 * np.eye(a.shape[1])
        coef = np.linalg.solve(gram, aw.T @ y)
        weights = 1.0 / (np.abs(y - a @ coef) + 1.0)
    return coef


def _as_weights(coef: np.ndarray) -> np.ndarray:
    scaled = np.round(coef * (1 << LIN_SHIFT))
    return np.clip(scaled, -MAX_WEIGHT + 1, MAX_WEIGHT - 1).astype(np.int64)


@dataclasses.dataclass(eq=False)
class FitSamples:
    """The pixels a plane's fits read (`_samples`) and, once computed, their one-set fit: the
    encoder's two fits (one set, one per parity) share both (a 512^2 CT: 15 -> 9 ms). The fits
    given samples read them only, not their `plane` argument."""

    a: np.ndarray
    y: np.ndarray
    parity: np.ndarray
    _single: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False)
    _errors: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False)

    def single(self) -> np.ndarray:
        if self._single is None:
            self._single = _irls(self.a, self.y)
        return self._single

    def single_errors(self) -> np.ndarray:
        """|x - prediction| of the one-set fit on every sample (the parity screen and fit share it)."""
        if self._errors is None:
            self._errors = np.abs(self.y - self.a @ self.single())
        return self._errors


def fit_samples(plane: np.ndarray, taps: np.ndarray = LIN_TAPS) -> FitSamples:
    """The samples of a fit with these taps (LIN_TAPS, or format 5's LIN_TAPS_WIDE)."""
    return FitSamples(*_samples(plane, taps))


def narrow_and_wide_samples(plane: np.ndarray) -> tuple[FitSamples, FitSamples]:
    """fit_samples(plane) and fit_samples(plane, LIN_TAPS_WIDE) from one pass over the plane:
    LIN_TAPS_WIDE starts with LIN_TAPS, so the narrow fit's columns are the wide fit's first."""
    a, y, parity = _all_samples(plane, LIN_TAPS_WIDE)
    return (FitSamples(*_busy(np.ascontiguousarray(a[:, : len(LIN_TAPS)]), y, parity)),
            FitSamples(*_busy(a, y, parity)))


def fit_linear_predictor(plane: np.ndarray, samples: FitSamples | None = None) -> np.ndarray:
    """Integer weights (taps,) in units of 2**-LIN_SHIFT predicting x - W from the taps' - W."""
    s = samples or fit_samples(plane)
    num_taps = s.a.shape[1]
    if len(s.y) < 4 * num_taps:
        return np.zeros(num_taps, dtype=np.int64)
    return _as_weights(s.single())


def fit_parity_predictor(plane: np.ndarray, samples: FitSamples | None = None) -> tuple[np.ndarray, float]:
    """Format 4: one weight set per position parity (LIN_PARITY_CLASSES, taps), for images
    interpolated 2x (every other pixel an average of its neighbours: pydicom's enhanced CT
    sample, zero-filled MR), and how much smaller its absolute error is on the samples than one
    weight set's (0: no better)."""
    s = samples or fit_samples(plane)
    a, y, parity = s.a, s.y, s.parity
    if min(np.bincount(parity, minlength=LIN_PARITY_CLASSES)) < 4 * len(LIN_TAPS):
        return np.zeros((LIN_PARITY_CLASSES, len(LIN_TAPS)), dtype=np.int64), 0.0
    single = s.single_errors().sum()
    classes = [parity == c for c in range(LIN_PARITY_CLASSES)]
    subsets = [(a[m], y[m]) for m in classes]
    coefs = [_irls(a_c, y_c) for a_c, y_c in subsets]
    split = sum(np.abs(y_c - a_c @ coef).sum() for (a_c, y_c), coef in zip(subsets, coefs))
    return np.stack([_as_weights(c) for c in coefs]), float(1 - split / max(single, 1e-9))


# format 5's screen before the parity fit: the single fit's mean |error| per position parity
# differs by this factor at least (dev corpus: interpolated images 60-77x, the CR 2.2x, every
# other image at most 1.16x), or the four parity fits (1 ms on a 512^2 CT) are skipped
PARITY_SCREEN_RATIO = 1.5


def parity_errors_differ(samples: FitSamples) -> bool:
    """Whether the one-set fit errs unevenly by position parity: the sign of an interpolated
    image, where one weight set per parity pays (fit_parity_predictor)."""
    if len(samples.y) < 4 * samples.a.shape[1]:
        return False
    by_class = np.bincount(samples.parity, weights=samples.single_errors(), minlength=LIN_PARITY_CLASSES)
    counts = np.bincount(samples.parity, minlength=LIN_PARITY_CLASSES)
    if counts.min() == 0:
        return False
    means = by_class / counts
    return bool(means.max() >= PARITY_SCREEN_RATIO * means.min())


def as_class_table(weights: np.ndarray) -> np.ndarray:
    """The coder's (LIN_CLASSES, taps) table with one weight set for every activity class."""
    return np.ascontiguousarray(np.tile(np.asarray(weights, dtype=np.int64), (LIN_CLASSES, 1)))
