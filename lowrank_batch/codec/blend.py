"""The residual predictor's blend: libjxl's self-weighted average of sub-predictions, each
trusted by the inverse of its recent error times a per-predictor maximum weight.

Formats 1-4 fix the maximum weights (PREDICTOR_MAX_WEIGHTS); format 5 trains them and lets a
plane carry its own (plane_header.py). A weight table holds, per predictor, the weight of every
small error sum plus the maximum weight itself; context_model._predict calls _weighted_average
with the table of the plane's blend (blend_table). All integer arithmetic: bit-exact anywhere.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .tokens import floor_log2 as _floor_log2

EXTRA_BITS = 3  # fractional bits of every prediction (as in libjxl)
RING = 8  # wavefronts of per-pixel state the model keeps (context_model.RING)
PLAIN_PREDICTORS = 7  # libjxl's 4 weighted-predictor ones, LOCO-I's MED, gradient, (W+NE)/2
NUM_PREDICTORS = PLAIN_PREDICTORS + 3  # + 2 guided by the reconstruction + 1 trained linear (format 2)
# each predictor's maximum weight in the blend (libjxl's ErrorWeight scale), by role: the plain
# ones, the guided pair, the linear one. Formats 1-4; format 5 stores each plane's own.
PREDICTOR_MAX_WEIGHTS = np.array([13, 12, 12, 12, 12, 12, 12, 12, 12, 12], dtype=np.int64)
# Format 5's encoder default, trained to minimise the lossless bytes of the dev corpus (ct, mr, cr;
# each modality's total counts alike) by coordinate search (benchmarks/predictor_weights.py): the
# blend trusts the fitted linear predictor three times more, the first two libjxl predictors,
# MED and the gradient less. Dev corpus (with format 5's refreshes and wide taps): CT -2.6%,
# MR -1.6%, CR -0.5% against formats 1-4's weights. The guided pair is untrained
# (few planes are guided). They are format 5's defaults (plane_header.V5_PREDICTOR_WEIGHTS); a plane
# coded with other weights carries them in its header.
TRAINED_PREDICTOR_WEIGHTS = (2, 1, 11, 13, 14, 3, 9, 12, 12, 36)

_DIV_LOOKUP = np.array([(1 << 24) // d if d else 0 for d in range(256)], dtype=np.int64)


# error sums the weight table covers: 4096 rather than 1024 takes the noisy 15-bit RG1 radiograph's
# decode from 275 to 240 ms on one core (larger sums branch off to _error_weight, and its
# predictors' sums often passed 1024); CT and MR sums stay far below either
WEIGHT_TABLE_SIZE = 4096
MAX_PREDICTOR_WEIGHT = 255  # format 5: a plane's predictor weights are 1..this (header bound)


@functools.lru_cache(maxsize=64)  # shared by every plane with these weights: never written to
def _weight_table(max_weights: tuple[int, ...]) -> np.ndarray:
    table = np.empty((len(max_weights), WEIGHT_TABLE_SIZE + 1), dtype=np.int64)
    err_sum = np.arange(WEIGHT_TABLE_SIZE, dtype=np.int64)
    shift = np.maximum(0, np.array([(e + 1).bit_length() - 1 - 5 for e in range(WEIGHT_TABLE_SIZE)]))
    div = (1 << 24) // ((err_sum >> shift) + 1)
    for k, m in enumerate(max_weights):
        table[k, :WEIGHT_TABLE_SIZE] = 4 + ((m * div) >> shift)  # _error_weight_py, for every small sum
        table[k, WEIGHT_TABLE_SIZE] = m
    return table


def weight_table(max_weights) -> np.ndarray:
    """The blend's weight table for the predictors' maximum weights (one per position in the
    blend): _error_weight of every small error sum, per predictor (the common case, computed
    once), and in the last column the maximum weight itself, for larger sums."""
    return _weight_table(tuple(int(m) for m in max_weights))


DEFAULT_WEIGHT_TABLE = weight_table(PREDICTOR_MAX_WEIGHTS)  # formats 1-4
LINEAR_ROLE = PLAIN_PREDICTORS + 2  # rows of a weight table by role: plain, the guided pair, the linear one


def blend_table(role_table: np.ndarray, has_side: bool, has_linear: bool) -> np.ndarray:
    """A weight table by position in a plane's blend (_predict: the plain predictors, then the
    guided pair where the plane has side information, then the linear one where it has weights)
    from one by role. Without side information the linear predictor sits where the guided pair
    would; formats 1-4 gave every position but the first the same weight, so for them the
    result is the same table."""
    if has_side or not has_linear:
        return role_table
    return role_table[list(range(PLAIN_PREDICTORS)) + [LINEAR_ROLE]]


@njit(cache=True, inline="always")
def _error_weight(err_sum, max_weight):
    """libjxl's ErrorWeight: about max_weight * 2**24 / (err_sum + 1), via a 64-entry table."""
    shift = _floor_log2(err_sum + 1) - 5
    if shift < 0:
        shift = 0
    return 4 + ((max_weight * _DIV_LOOKUP[(err_sum >> shift) + 1]) >> shift)


@njit(cache=True, inline="always")
def _weighted_average(sub, num_pred, perr, weights, weight_table, s1, s2, i, has_w, has_n, has_ne):
    """libjxl's weighted average: each sub-prediction weighted by the inverse of its recent
    error at N, NE, NW, W and WW; weights cut to ~5 bits, division by table lookup.

    perr[slot, row, k] holds a pixel's own error of predictor k; perr[slot, row, NUM_PREDICTORS + k]
    holds it plus its W neighbour's, so W+WW and N+NW are one load each (as in libjxl).
    """
    total_weight = 0
    for k in range(num_pred):
        weights[k] = _weight(weight_table, k, _nearest_errors(perr, k, s1, s2, i, has_w, has_n, has_ne))
        total_weight += weights[k]
    return _average(sub, num_pred, weights, total_weight)


@njit(cache=True, inline="always")
def _weighted_average_parity(sub, num_pred, perr, weights, weight_table, t, s1, s2, i, j, width, has_w, has_n,
                             has_ne):
    """Format 6, a plane interpolated 2x (linear weights per parity): as _weighted_average, but
    each predictor's error sum is the mean of the nearest neighbours' and that of the nearest
    pixels of the same position parity, (i, j-2), (i, j-4), (i-2, j), (i-2, j-2), (i-2, j+2): a
    neighbour of the other parity errs as an interpolated pixel would not, or the reverse.
    (The same-parity errors alone: moon -5.2%, the enhanced CT +-0.2%; the mean: -3.2%, -0.8%.)"""
    total_weight = 0
    for k in range(num_pred):
        same = 0
        if j >= 2:
            same += perr[(t - 2) & (RING - 1), i, k]
            if j >= 4:
                same += perr[(t - 4) & (RING - 1), i, k]
        if i >= 2:
            same += perr[(t - 4) & (RING - 1), i - 2, k]
            if j >= 2:
                same += perr[(t - 6) & (RING - 1), i - 2, k]
            if j + 2 < width:
                same += perr[(t - 2) & (RING - 1), i - 2, k]
        nearest = _nearest_errors(perr, k, s1, s2, i, has_w, has_n, has_ne)
        weights[k] = _weight(weight_table, k, (nearest + same + 1) >> 1)
        total_weight += weights[k]
    return _average(sub, num_pred, weights, total_weight)


@njit(cache=True, inline="always")
def _nearest_errors(perr, k, s1, s2, i, has_w, has_n, has_ne):
    """Predictor k's recent error at W + WW, N + NW and NE (ring slots s1 = t-1, s2 = t-2)."""
    s = 0
    if has_w:
        s += perr[s1, i, NUM_PREDICTORS + k]  # W + WW
    if has_n:
        s += perr[s2, i - 1, NUM_PREDICTORS + k]  # N + NW
        if has_ne:
            s += perr[s1, i - 1, k]
    return s


@njit(cache=True, inline="always")
def _weight(weight_table, k, err_sum):
    """Predictor k's weight for an error sum: the table's entry, or _error_weight beyond it."""
    if err_sum < WEIGHT_TABLE_SIZE:
        return weight_table[k, err_sum]
    return _error_weight(err_sum, weight_table[k, WEIGHT_TABLE_SIZE])


@njit(cache=True, inline="always")
def _average(sub, num_pred, weights, total_weight):
    """The sub-predictions' average with `weights` cut to ~5 bits (libjxl's), one table division."""
    shift = _floor_log2(total_weight) - 4
    weight_sum = 0
    acc = 0
    for k in range(num_pred):
        weights[k] >>= shift
        weight_sum += weights[k]
        acc += weights[k] * sub[k]
    return ((acc + (weight_sum >> 1) - 1) * _DIV_LOOKUP[weight_sum]) >> 24
