"""Format 4 encoder's estimates (numba): what tokens cost under the coder's adaptive
histograms, and under intensity bands, without range coding them.

The encoder chooses a plane's intensity bands by these counts (plane_v4.choose_value_classes):
the model pass runs once, and each band choice re-runs only the histograms over its tokens
(`_histogram_pass`), after a quick static screen (`_static_bits_by_bands`). Every count is an
integer (bits in units of 2**-LOG2_SHIFT), so the choice is the same on any machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .context_model import _copy_row, _count, _note_touched, _refresh_one, _wave_rows
from .jit import refcount_free
from .tokens import floor_log2 as _floor_log2


@njit(cache=True, inline="always")
def _row_sum(a, r):
    total = 0
    for k in range(a.shape[1]):
        total += a[r, k]
    return total


LOG2_SHIFT = 16
# log2(i) in units of 2**-16 for i < 4096 (L1-sized), for the encoder's size estimates (integers: the same
# choice on any machine); _log2_fixed extends it to any count
LOG2_TABLE = np.concatenate(([0], np.round(np.log2(np.arange(1, 1 << 12)) * (1 << LOG2_SHIFT)))).astype(np.int64)


@njit(cache=True, inline="always")
def _log2_fixed(n, log2_table):
    """log2(n) in units of 2**-LOG2_SHIFT, for any n >= 1 (table lookup, then shifts)."""
    shift = max(0, _floor_log2(n) - 11)  # log2_table holds 2**12 entries
    return log2_table[n >> shift] + (shift << LOG2_SHIFT)


@njit(cache=True, nogil=True)
def _histogram_pass(buckets, tokens, height, width, counts, totals, snap, since, coded, epoch, refresh, out_snap,
                    snapshots, log2_table):
    """Format 4 encoder: the histogram side of `_encode_plane` alone, for buckets chosen after
    the model pass (the predictions do not depend on them). Fills `out_snap` and `snapshots`
    with the models `_encode_plane` would have used (`log2_table`: LOG2_TABLE, an argument so
    that numba can cache the kernel); returns (snapshots used, the tokens' cost under those
    snapshots in units of 2**-LOG2_SHIFT bits). Only the buckets the last wavefront used are
    checked for a refresh (the same refreshes as _refresh's scan of all, in O(pixels))."""
    num_buckets = counts.shape[0]
    return _histogram_loop(buckets, tokens, height, width, counts, totals, snap, since, coded, epoch, refresh, out_snap,
                           snapshots, log2_table, np.zeros(num_buckets, dtype=np.int64),
                           np.zeros(num_buckets, dtype=np.int64), np.zeros(num_buckets, dtype=np.bool_),
                           np.empty(num_buckets + 1, dtype=np.int64))


@refcount_free
def _histogram_loop(buckets, tokens, height, width, counts, totals, snap, since, coded, epoch, refresh, out_snap,
                    snapshots, log2_table, snap_index, snap_total, touched, touched_list):
    num_buckets = counts.shape[0]
    num_touched = 0
    num_snap = 0
    for b in range(num_buckets):
        _copy_row(snap, b, snapshots, num_snap)
        snap_index[b] = num_snap
        snap_total[b] = _row_sum(snap, b)
        num_snap += 1
    cost = 0
    pos = 0
    for t in range(2 * (height - 1) + width):
        for k in range(num_touched):
            b = touched_list[k]
            touched[b] = False
            if _refresh_one(b, counts, snap, since, coded, epoch, refresh):
                _copy_row(snap, b, snapshots, num_snap)
                snap_index[b] = num_snap
                snap_total[b] = _row_sum(snap, b)
                num_snap += 1
        num_touched = 0
        i_start, i_end = _wave_rows(t, height, width)
        for _ in range(i_end - i_start + 1):
            b = np.int64(buckets[pos])
            tok = np.int64(tokens[pos])
            out_snap[pos] = snap_index[b]
            cost += _log2_fixed(snap_total[b], log2_table) - _log2_fixed(snap[b, tok], log2_table)
            _count(counts, totals, b, tok, since, coded)
            num_touched = _note_touched(b, touched, touched_list, num_touched)
            pos += 1
    return num_snap, cost


@njit(cache=True, inline="always")
def _band_of(value, thresholds):
    """context_model._value_class's band: the number of thresholds at or below value."""
    band = 0
    for k in range(thresholds.shape[0]):
        band += value >= thresholds[k]
    return band


@njit(cache=True, nogil=True)
def _banded(buckets, band_values, thresholds):
    """Format 4 encoder: bucket * bands + band per pixel (context_model._value_class's band)."""
    bands = thresholds.shape[0] + 1
    out = np.empty(buckets.shape[0], dtype=np.int64)
    for p in range(buckets.shape[0]):
        out[p] = np.int64(buckets[p]) * bands + _band_of(band_values[p], thresholds)
    return out


@njit(cache=True, nogil=True)
def _model_bits(tokens, snaps, snapshots, log2_table):
    """The tokens' cost under their histogram snapshots, as _histogram_pass counts it."""
    return _model_bits_loop(tokens, snaps, snapshots, log2_table, np.empty(snapshots.shape[0], dtype=np.int64))


@refcount_free
def _model_bits_loop(tokens, snaps, snapshots, log2_table, totals):
    for s in range(snapshots.shape[0]):
        totals[s] = _row_sum(snapshots, s)
    cost = 0
    for p in range(tokens.shape[0]):
        s = np.int64(snaps[p])
        cost += _log2_fixed(totals[s], log2_table) - _log2_fixed(snapshots[s, np.int64(tokens[p])], log2_table)
    return cost


@njit(cache=True, nogil=True)
def _static_bits_by_bands(buckets, band_values, edges, band_maps, tokens, num_buckets, num_tokens, log2_table):
    """A quick estimate, for each of several band choices, of what coding `tokens` in the
    buckets `_banded(buckets, band_values, thresholds)` costs (2**-LOG2_SHIFT bits), without
    making those arrays: each bucket's empirical entropy plus half a log2(count) per distinct
    token it uses. It misjudges the adaptive coder by 0.1-0.5%, so it only screens out bands
    that cannot pay.

    One pass over the pixels serves every choice: `edges` holds the union of their thresholds
    (sorted, distinct), and row k of `band_maps` gives choice k's band for each band of `edges`
    (every threshold of a choice is an edge, so an edge band lies inside one band of it)."""
    fine = edges.shape[0] + 1
    hist = np.zeros((num_buckets * fine, num_tokens), dtype=np.int64)
    for p in range(buckets.shape[0]):
        hist[np.int64(buckets[p]) * fine + _band_of(band_values[p], edges), tokens[p]] += 1
    costs = np.zeros(band_maps.shape[0], dtype=np.int64)
    merged = np.empty(num_tokens, dtype=np.int64)
    for k in range(band_maps.shape[0]):
        bands = band_maps[k, fine - 1] + 1
        cost = 0
        for b in range(num_buckets):
            for band in range(bands):
                merged[:] = 0
                for u in range(fine):
                    if band_maps[k, u] == band:
                        merged += hist[b * fine + u]
                n = 0
                used = 0
                for t in range(num_tokens):
                    h = merged[t]
                    if h:
                        n += h
                        used += 1
                        cost -= h * _log2_fixed(h, log2_table)
                if n:
                    log_n = _log2_fixed(n, log2_table)
                    cost += n * log_n + ((used - 1) * log_n >> 1)
        costs[k] = cost
    return costs


@njit(cache=True, nogil=True)
def _band_values(values):
    """Format 4 encoder: per pixel in coding order, the intensity its band is chosen by
    (context_model._value_class: the mean of W and N, with _predict's edge rules)."""
    height, width = values.shape
    out = np.empty(height * width, dtype=np.int64)
    pos = 0
    for t in range(2 * (height - 1) + width):
        i_start, i_end = _wave_rows(t, height, width)
        for i in range(i_start, i_end + 1):
            j = t - 2 * i
            if j > 0:
                w = np.int64(values[i, j - 1])
            elif i > 0:
                w = np.int64(values[i - 1, j])
            else:
                w = 0
            n = np.int64(values[i - 1, j]) if i > 0 else w
            out[pos] = (w + n + 1) >> 1
            pos += 1
    return out
