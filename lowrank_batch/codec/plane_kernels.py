"""Plane-level drivers of the context model: the encoder's pass over a whole plane and the
decoder's two steps per wavefront (numba). The residual coder wires them to the range coder.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .context_model import (
    EXTRA_BITS,
    NUM_PREDICTORS,
    RING,
    _predict,
    _quantise,
    _refresh,
    _refresh_bias,
    _update,
    _num_pred,
    _wave_rows,
    token_base,
    token_of,
)


@njit(cache=True)
def _encode_plane(x, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, counts, totals, snap, since, coded, epoch,
                  refreshed, max_weights, out_bucket, out_token, out_snap, snapshots, raw_words, out_values, lut, nx,
                  lin, bias_ring, bias_sum, bias_count, bias_corr):
    """Run the model over a whole plane in wavefront order (encoder side).

    Fills, per pixel in coding order: bucket, token and the index of the histogram snapshot
    the token must be coded with; appends every snapshot to `snapshots`; packs raw bits into
    `raw_words` (LSB first). Returns (snapshots used, raw bits written).
    """
    height, width = x.shape
    step = 2 * delta + 1
    sub = np.zeros(NUM_PREDICTORS, dtype=np.int64)
    weights = np.zeros(NUM_PREDICTORS, dtype=np.int64)
    num_pred = _num_pred(has_side, lin)
    num_buckets = counts.shape[0]
    snap_index = np.zeros(num_buckets, dtype=np.int64)
    num_snap = 0
    for b in range(num_buckets):
        snapshots[num_snap, :] = snap[b, :]
        snap_index[b] = num_snap
        num_snap += 1
    bitpos = 0
    pos = 0
    for t in range(2 * (height - 1) + width):
        _refresh_bias(bias_sum, bias_count, bias_corr)
        if _refresh(counts, snap, since, coded, epoch, refreshed):
            for b in range(num_buckets):
                if refreshed[b]:
                    snapshots[num_snap, :] = snap[b, :]
                    snap_index[b] = num_snap
                    num_snap += 1
        slot = t & (RING - 1)
        i_start, i_end = _wave_rows(t, height, width)
        for i in range(i_start, i_end + 1):
            j = t - 2 * i
            pred8, activity, lean = _predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, sub, weights, max_weights,
                                             step, lut, nx, lo, lin, bias_ring, bias_corr)
            pred = (pred8 + 3) >> EXTRA_BITS
            pred = min(max(pred, lo), hi)
            e = _quantise(x[i, j] - pred, delta)
            value = min(max(pred + e * step, lo), hi)
            if lean > 0:
                e = -e
            u = 2 * e if e >= 0 else -2 * e - 1
            tok, nraw = token_of(u)
            b = activity
            if nraw > 0:
                raw = u & ((1 << nraw) - 1)
                word = bitpos >> 6
                off = bitpos & 63
                raw_words[word] |= np.uint64(raw) << np.uint64(off)
                if off + nraw > 64:
                    raw_words[word + 1] |= np.uint64(raw) >> np.uint64(64 - off)
                bitpos += nraw
            out_values[i, j] = value
            out_bucket[pos] = b
            out_token[pos] = tok
            out_snap[pos] = snap_index[b]
            pos += 1
            _update(slot, i, j > 0, value, pred8, sub, num_pred, xr, te, perr, counts, totals, b, tok, since, coded,
                    bias_ring, bias_sum, bias_count)
    return num_snap, bitpos


@njit(cache=True)
def _predict_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, max_weights, out_pred8, out_pred,
                       out_bucket, out_lean, subs, height, width, lut, nx, lin, bias_ring, bias_corr):
    """Decoder side: predictions and buckets of every pixel on wavefront t."""
    step = 2 * delta + 1
    weights = np.zeros(NUM_PREDICTORS, dtype=np.int64)
    i_start, i_end = _wave_rows(t, height, width)
    k = 0
    for i in range(i_start, i_end + 1):
        j = t - 2 * i
        pred8, activity, lean = _predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, subs[k], weights, max_weights,
                                         step, lut, nx, lo, lin, bias_ring, bias_corr)
        pred = (pred8 + 3) >> EXTRA_BITS
        out_pred8[k] = pred8
        out_lean[k] = lean
        out_pred[k] = min(max(pred, lo), hi)
        out_bucket[k] = activity
        k += 1
    return k


@njit(cache=True)
def _finish_wavefront(t, grouped_tokens, order, tokens, lo, hi, delta, raw_words, bitpos, out, xr, te, perr, counts,
                      totals, since, coded, pred8s, preds, buckets, leans, subs, has_side, lin, bias_ring, bias_sum,
                      bias_count):
    """Decoder side: put the wavefront's tokens (decoded grouped by bucket) back in pixel order,
    turn them (+ raw bits) into pixel values, update state."""
    for j in range(grouped_tokens.size):
        tokens[order[j]] = grouped_tokens[j]
    height, width = out.shape
    step = 2 * delta + 1
    num_pred = _num_pred(has_side, lin)
    slot = t & (RING - 1)
    i_start, i_end = _wave_rows(t, height, width)
    k = 0
    for i in range(i_start, i_end + 1):
        tok = tokens[k]
        base_value, nraw = token_base(tok)
        u = base_value
        if nraw > 0:
            word = bitpos >> 6
            off = bitpos & 63
            raw = raw_words[word] >> np.uint64(off)
            if off + nraw > 64:
                raw |= raw_words[word + 1] << np.uint64(64 - off)
            u += np.int64(raw & np.uint64((1 << nraw) - 1))
            bitpos += nraw
        e = u >> 1 if (u & 1) == 0 else -((u + 1) >> 1)
        pred8 = pred8s[k]
        pred = preds[k]
        if leans[k] > 0:
            e = -e
        value = min(max(pred + e * step, lo), hi)
        out[i, t - 2 * i] = value
        _update(slot, i, t - 2 * i > 0, value, pred8, subs[k], num_pred, xr, te, perr, counts, totals, buckets[k],
                tok, since, coded, bias_ring, bias_sum, bias_count)
        k += 1
    return bitpos


@njit(cache=True)
def _prepare_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, max_weights, counts, snap, since,
                       coded, epoch, refreshed, pred8s, preds, buckets, leans, subs, order, active, height, width,
                       lut, nx, lin, bias_ring, bias_sum, bias_count, bias_corr):
    """Decoder side, one call per wavefront: refresh histograms, predict every pixel, and group
    the pixels by bucket. `order` gets pixel positions grouped by bucket; `active` rows are
    (bucket, count) in bucket order. Returns (pixels, active buckets, any histogram refreshed)."""
    any_refreshed = _refresh(counts, snap, since, coded, epoch, refreshed)
    _refresh_bias(bias_sum, bias_count, bias_corr)
    k = _predict_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, max_weights, pred8s, preds,
                           buckets, leans, subs, height, width, lut, nx, lin, bias_ring, bias_corr)
    num_buckets = counts.shape[0]
    sizes = np.zeros(num_buckets, dtype=np.int64)
    for j in range(k):
        sizes[buckets[j]] += 1
    start = np.zeros(num_buckets, dtype=np.int64)
    num_active = 0
    pos = 0
    for b in range(num_buckets):
        if sizes[b]:
            start[b] = pos
            pos += sizes[b]
            active[num_active, 0] = b
            active[num_active, 1] = sizes[b]
            num_active += 1
    for j in range(k):
        b = buckets[j]
        order[start[b]] = j
        start[b] += 1
    return k, num_active, any_refreshed
