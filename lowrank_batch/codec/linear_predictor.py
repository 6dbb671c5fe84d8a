"""The plane's fitted linear predictor (format 2's trained one, format 3+'s per plane): integer
weights on the differences of up to 16 causal taps to W, one weight set per activity class or
(format 4) per position parity. Read from context_model's ring of decoded wavefronts, so every
tap lies on an earlier wavefront; integer arithmetic with one rounding, bit-exact anywhere.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .blend import EXTRA_BITS, RING
from .tokens import floor_log2

# The trained linear predictor's taps (row, column offsets), all on earlier wavefronts; it
# predicts x - W from the taps' differences to W with integer weights in units of 2**-LIN_SHIFT
LIN_TAPS = np.array([(-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-2, 1), (-2, -1), (-2, 2), (0, -3)],
                    dtype=np.int64)
# Format 5 may widen a plane's fitted predictor to 16 taps: the same 10, then 6 more (every one
# on an earlier wavefront, at most 3 rows up and 3 columns aside). Dev corpus, where the trial
# keeps them: the 512^2 CT -0.8%, the 484^2 MR -0.5%
LIN_TAPS_WIDE = np.concatenate((LIN_TAPS, np.array([(-3, 0), (-3, -1), (-3, 1), (-2, -2), (-1, -3), (-2, 3)],
                                                   dtype=np.int64)))
LIN_SHIFT = 12
LIN_CLASSES = 8  # weight sets, by the size of the neighbours' recent errors
LIN_PARITY_CLASSES = 4  # format 4: or one weight set per (row, column) parity
NO_LINEAR = np.zeros((0, len(LIN_TAPS)), dtype=np.int64)  # format 1


@njit(cache=True, inline="always")
def _position_parity(i, j):
    """(row parity, column parity) of pixel (i, j) as one class 0-3: format 4's weight set of an
    interpolated plane, and format 6's histograms and bias corrections there."""
    return (i & 1) << 1 | (j & 1)


@njit(cache=True, inline="always")
def _lin_class(activity):
    c = floor_log2(activity + 1) >> 1
    return c if c < LIN_CLASSES else LIN_CLASSES - 1


@njit(cache=True, inline="always")
def _tap(t, i, j, di, dj, width, xr, w):
    """Decoded value at (i + di, j + dj), read from the ring; W where outside the image."""
    r = i + di
    c = j + dj
    if r < 0 or c < 0 or c >= width:
        return w
    return xr[(t + 2 * di + dj) & (RING - 1), r]


@njit(cache=True, inline="always")
def _linear(t, i, j, width, xr, w, lin, activity):
    """The trained linear prediction (EXTRA_BITS fractional bits): integer weights, one rounding.
    A table of LIN_PARITY_CLASSES rows (format 4) holds one weight set per position parity
    (row, column), which fits images interpolated 2x; otherwise rows are activity classes.
    Its width says the taps: LIN_TAPS, or (format 5) LIN_TAPS_WIDE, of which LIN_TAPS is the start."""
    cls = _position_parity(i, j) if lin.shape[0] == LIN_PARITY_CLASSES else _lin_class(activity)
    acc = 0
    # two copies over the global tap tables, so that numba sees constant trip counts and offsets
    # (one loop over lin.shape[1] taps cost 14% of a CT's decode)
    if lin.shape[1] == LIN_TAPS.shape[0]:
        if i >= 2 and j >= 3 and j + 2 < width:  # every tap inside the image: no edge tests
            for k in range(LIN_TAPS.shape[0]):
                acc += lin[cls, k] * (xr[(t + 2 * LIN_TAPS[k, 0] + LIN_TAPS[k, 1]) & (RING - 1),
                                         i + LIN_TAPS[k, 0]] - w)
        else:
            for k in range(LIN_TAPS.shape[0]):
                acc += lin[cls, k] * (_tap(t, i, j, LIN_TAPS[k, 0], LIN_TAPS[k, 1], width, xr, w) - w)
    elif i >= 3 and j >= 3 and j + 3 < width:
        for k in range(LIN_TAPS_WIDE.shape[0]):
            acc += lin[cls, k] * (xr[(t + 2 * LIN_TAPS_WIDE[k, 0] + LIN_TAPS_WIDE[k, 1]) & (RING - 1),
                                     i + LIN_TAPS_WIDE[k, 0]] - w)
    else:
        for k in range(LIN_TAPS_WIDE.shape[0]):
            acc += lin[cls, k] * (_tap(t, i, j, LIN_TAPS_WIDE[k, 0], LIN_TAPS_WIDE[k, 1], width, xr, w) - w)
    return (w << EXTRA_BITS) + ((acc + (1 << (LIN_SHIFT - EXTRA_BITS - 1))) >> (LIN_SHIFT - EXTRA_BITS))
