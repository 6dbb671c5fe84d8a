"""Plane-level drivers of the context model (numba): the encoder's pass over a whole plane,
the range coding of its tokens, and the decoder's whole-plane loop (one nogil call).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .jit import refcount_free
from .context_model import (
    EXTRA_BITS,
    NUM_PREDICTORS,
    NUM_TOKENS,
    RING,
    _predict,
    _quantise,
    _copy_row,
    _refresh,
    _refresh_bias_one,
    _note_touched,
    _refresh_one,
    _update,
    _num_pred,
    _wave_rows,
    token_base,
    token_of,
)
from .range_coder import (
    E_WRITTEN,
    ERR_FULL,
    ERR_INVALID,
    OK,
    SLOT_BITS,
    decode_symbol,
    decode_symbol_slotted,
    decoder_init,
    encode_sequence,
    encode_symbol,
    encoder_init,
    encoder_seal,
    fill_slots,
    quantise_cdf,
    quantise_rows,
    word_capacity,
)
from .stream_order import order_for_single_stream

ERR_RAW_OVERRUN = -3  # the tokens ask for more raw bits than the stream holds
if NUM_TOKENS > 256:  # the decoder's slot tables (range_coder.fill_slots) hold symbols as uint8
    raise ImportError(f"{NUM_TOKENS} tokens do not fit the uint8 slot tables of _decode_plane_all")


@njit(cache=True, inline="always")
def _note_bias_contexts(t, height, width, bias_ring, dirty, dirty_list, num_dirty):
    """After wavefront t is coded: add the bias contexts its pixels updated (their context is
    in bias_ring, written by _predict) to the list of contexts to refresh. Branch-free as
    context_model._note_touched: dirty_list has one spare entry (_bias_lists)."""
    if bias_ring is None or bias_ring.shape[1] == 0:
        return num_dirty
    slot = t & (RING - 1)
    i_start, i_end = _wave_rows(t, height, width)
    for i in range(i_start, i_end + 1):
        c = bias_ring[slot, i, 0]
        dirty_list[num_dirty] = c
        num_dirty += 1 - dirty[c]
        dirty[c] = True
    return num_dirty


@njit(cache=True, inline="always")
def _bias_lists(bias_sum):
    """The flags and list of bias contexts updated since the last refresh (empty: bias off);
    the list has a spare entry for _note_bias_contexts."""
    n = 0 if bias_sum is None else bias_sum.shape[0]
    return np.zeros(n, dtype=np.bool_), np.empty(n + 1, dtype=np.int64)


@njit(cache=True, inline="always")
def _refresh_noted_bias(bias_sum, bias_count, bias_corr, dirty, dirty_list, num_dirty):
    """context_model._refresh_bias, run on the contexts updated since its last call only: the
    others' sums and counts have not changed, so neither would their corrections. Same bits,
    but O(pixels) instead of O(wavefronts x 1280 contexts) (16% of a 512^2 plane's time,
    half of a 256^2 trial crop's). Returns the new (empty) list length."""
    if bias_sum is None:
        return 0
    for k in range(num_dirty):
        c = dirty_list[k]
        dirty[c] = False
        # per context, inlined: slicing three arrays per context per wavefront for
        # _refresh_bias cost 3-5% of a 512^2 CT plane's decode (49.6 -> 47.3-48.4 ms)
        _refresh_bias_one(c, bias_sum, bias_count, bias_corr)
    return 0


@njit(cache=True, nogil=True)
def _encode_plane(x, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, counts, totals, snap, since, coded, epoch,
                  refresh, refreshed, weight_table, out_bucket, out_token, out_snap, snapshots, raw_words, out_values,
                  lut, nx, lin, vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr):
    """Run the model over a whole plane in wavefront order (encoder side): _encode_loop with
    its scratch arrays. `refreshed` is unused (a list of the buckets touched replaces it) but
    kept: every kernel takes ModelState alike."""
    num_buckets = counts.shape[0]
    dirty, dirty_list = _bias_lists(bias_sum)
    return _encode_loop(x, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, counts, totals, snap, since, coded,
                        epoch, refresh, weight_table, out_bucket, out_token, out_snap, snapshots, raw_words, out_values,
                        lut, nx, lin, vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr,
                        np.zeros(NUM_PREDICTORS, dtype=np.int64), np.zeros(NUM_PREDICTORS, dtype=np.int64),
                        np.zeros(num_buckets, dtype=np.int64), dirty, dirty_list, np.zeros(num_buckets, dtype=np.bool_),
                        np.empty(num_buckets + 1, dtype=np.int64))


@refcount_free
def _encode_loop(x, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, counts, totals, snap, since, coded, epoch,
                 refresh, weight_table, out_bucket, out_token, out_snap, snapshots, raw_words, out_values, lut, nx, lin,
                 vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr, sub, weights, snap_index, dirty,
                 dirty_list, touched, touched_list):
    """Run the model over a whole plane in wavefront order (encoder side).

    Fills, per pixel in coding order: bucket, token and the index of the histogram snapshot
    the token must be coded with; appends every snapshot to `snapshots`; packs raw bits into
    `raw_words` (LSB first). Returns (snapshots used, raw bits written)."""
    height, width = x.shape
    step = 2 * delta + 1
    num_pred = _num_pred(has_side, lin)
    num_buckets = counts.shape[0]
    num_snap = 0
    for b in range(num_buckets):
        _copy_row(snap, b, snapshots, num_snap)
        snap_index[b] = num_snap
        num_snap += 1
    bitpos = 0
    pos = 0
    num_dirty = 0
    # refresh checks only for the buckets the last wavefront coded in (as _decode_per_bucket);
    # snapshot ids then follow that order, which the streams never see (ids only index models)
    num_touched = 0
    for t in range(2 * (height - 1) + width):
        num_dirty = _refresh_noted_bias(bias_sum, bias_count, bias_corr, dirty, dirty_list, num_dirty)
        for k in range(num_touched):
            b = touched_list[k]
            touched[b] = False
            if _refresh_one(b, counts, snap, since, coded, epoch, refresh):
                _copy_row(snap, b, snapshots, num_snap)
                snap_index[b] = num_snap
                num_snap += 1
        num_touched = 0
        slot = t & (RING - 1)
        i_start, i_end = _wave_rows(t, height, width)
        for i in range(i_start, i_end + 1):
            j = t - 2 * i
            pred8, activity, lean = _predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, sub, weights,
                                             weight_table, step, lut, nx, lo, lin, vthr, flat_mode, bias_ring,
                                             bias_corr)
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
            if delta != 0:  # lossless: the values are x itself (model_pass)
                out_values[i, j] = value
            out_bucket[pos] = b
            out_token[pos] = tok
            out_snap[pos] = snap_index[b]
            pos += 1
            _update(slot, i, j > 0, value, pred8, sub, num_pred, xr, te, perr, counts, totals, b, tok, since, coded,
                    bias_ring, bias_sum, bias_count)
            num_touched = _note_touched(b, touched, touched_list, num_touched)
        num_dirty = _note_bias_contexts(t, height, width, bias_ring, dirty, dirty_list, num_dirty)
    return num_snap, bitpos


@njit(cache=True)
def _predict_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, weight_table, out_pred8, out_pred,
                       out_bucket, out_lean, subs, height, width, lut, nx, lin, vthr, flat_mode, bias_ring, bias_corr):
    """Decoder side: predictions and buckets of every pixel on wavefront t."""
    step = 2 * delta + 1
    weights = np.zeros(NUM_PREDICTORS, dtype=np.int64)
    i_start, i_end = _wave_rows(t, height, width)
    k = 0
    for i in range(i_start, i_end + 1):
        j = t - 2 * i
        pred8, activity, lean = _predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, subs[k], weights,
                                         weight_table, step, lut, nx, lo, lin, vthr, flat_mode, bias_ring, bias_corr)
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
        value, bitpos = _token_value(tok, raw_words, bitpos, preds[k], leans[k], step, lo, hi)
        out[i, t - 2 * i] = value
        _update(slot, i, t - 2 * i > 0, value, pred8s[k], subs[k], num_pred, xr, te, perr, counts, totals, buckets[k],
                tok, since, coded, bias_ring, bias_sum, bias_count)
        k += 1
    return bitpos


@njit(cache=True, inline="always")
def _token_value(tok, raw_words, bitpos, pred, lean, step, lo, hi):
    """Decoder side: a pixel's value from its token, its raw bits (read at bitpos, LSB first)
    and its prediction. Returns (value, new bitpos)."""
    u, nraw = token_base(tok)
    if nraw > 0:
        word = bitpos >> 6
        off = bitpos & 63
        raw = raw_words[word] >> np.uint64(off)
        if off + nraw > 64:
            raw |= raw_words[word + 1] << np.uint64(64 - off)
        u += np.int64(raw & np.uint64((1 << nraw) - 1))
        bitpos += nraw
    e = u >> 1 if (u & 1) == 0 else -((u + 1) >> 1)
    if lean > 0:
        e = -e
    return min(max(pred + e * step, lo), hi), bitpos


@njit(cache=True)
def _prepare_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, weight_table, counts, snap, since,
                       coded, epoch, refresh, refreshed, pred8s, preds, buckets, leans, subs, order, active, height,
                       width, lut, nx, lin, vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr):
    """Decoder side, one call per wavefront (after the bias corrections' refresh): refresh
    histograms, predict every pixel, and group the pixels by bucket. `order` gets pixel
    positions grouped by bucket; `active` rows are (bucket, count) in bucket order. Returns
    (pixels, active buckets, any histogram refreshed)."""
    any_refreshed = _refresh(counts, snap, since, coded, epoch, refresh, refreshed)
    k = _predict_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, weight_table, pred8s, preds,
                           buckets, leans, subs, height, width, lut, nx, lin, vthr, flat_mode, bias_ring, bias_corr)
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


@njit(cache=True, nogil=True)
def _code_bucket_streams(buckets, tokens, snaps, cdfs, num_buckets):
    """Layout 0: range-code each bucket's tokens (in coding order, with the model of their
    histogram snapshot) into its own stream. Returns (words, first word of each bucket's
    stream, its number of words, status): the same words one constriction RangeEncoder per
    bucket gives."""
    sizes = np.zeros(num_buckets, dtype=np.int64)
    for b in buckets:
        sizes[b] += 1
    bases = np.zeros(num_buckets, dtype=np.int64)
    caps = np.zeros(num_buckets, dtype=np.int64)
    total = 0
    for b in range(num_buckets):
        caps[b] = word_capacity(sizes[b])
        bases[b] = total
        total += caps[b]
    words = np.empty(total, dtype=np.uint32)
    states = np.empty((num_buckets, 5), dtype=np.uint64)
    for b in range(num_buckets):
        encoder_init(states, b)
    for k in range(buckets.shape[0]):
        b = np.int64(buckets[k])
        if not encode_symbol(np.int64(tokens[k]), cdfs, np.int64(snaps[k]), words, bases[b], caps[b], states, b):
            return words, bases, sizes, ERR_FULL
    lengths = np.zeros(num_buckets, dtype=np.int64)
    for b in range(num_buckets):
        if not encoder_seal(words, bases[b], caps[b], states, b):
            return words, bases, lengths, ERR_FULL
        lengths[b] = np.int64(states[b, E_WRITTEN])
    return words, bases, lengths, OK


@njit(cache=True, nogil=True)
def _code_shared_stream(buckets, tokens, snaps, cdfs, height, width, num_buckets):
    """Layout 1: one stream, symbols in (wavefront, bucket, row) order. Returns (words,
    number of words or ERR_FULL)."""
    ordered_tokens, ordered_snaps, _ = order_for_single_stream(buckets, tokens, snaps, height, width, num_buckets)
    cap = word_capacity(tokens.shape[0])
    words = np.empty(cap, dtype=np.uint32)
    return words, encode_sequence(ordered_tokens, ordered_snaps, cdfs, words, 0, cap)


@njit(cache=True, nogil=True)
def _decode_plane_all(words, starts, ends, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, weight_table,
                      counts, totals, snap, since, coded, epoch, refresh, refreshed, raw_words, num_bits, out, lut, nx,
                      lin, vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr, in_order):
    """Decode a whole plane in one call (no GIL held): per wavefront refresh the histograms and
    re-quantise the refreshed ones, predict, range-decode the tokens, finish.

    `starts`/`ends` index `words`: one range-coder stream per bucket (layout 0), or one shared
    stream (layout 1) read in (bucket, row) order per wavefront, or (`in_order`, format 4) one
    stream in coding order. Returns OK, ERR_INVALID (range coder) or ERR_RAW_OVERRUN."""
    num_buckets, num_tokens = counts.shape
    decoders = np.empty((starts.shape[0], 5), dtype=np.uint64)
    for s in range(starts.shape[0]):
        decoder_init(words, starts[s], ends[s], decoders, s)
    cdfs = np.empty((num_buckets, num_tokens + 1), dtype=np.uint32)
    quantise_rows(snap, cdfs)
    if starts.shape[0] == 1 and not in_order:
        return _decode_shared(words, decoders, cdfs, lo, hi, delta, xr, side, has_side, patch_mask, te, perr,
                              weight_table, counts, totals, snap, since, coded, epoch, refresh, refreshed, raw_words,
                              num_bits, out, lut, nx, lin, vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr)
    # the stream each bucket's tokens are in: their own, or (in coding order) the one stream
    streams = np.zeros(num_buckets, dtype=np.int64) if in_order else np.arange(num_buckets)
    dirty, dirty_list = _bias_lists(bias_sum)
    slots = np.empty((num_buckets, 1 << SLOT_BITS), dtype=np.uint8)  # NUM_TOKENS <= 256: checked above
    for b in range(num_buckets):
        fill_slots(cdfs, b, slots)
    return _decode_per_bucket(words, decoders, streams, cdfs, slots, lo, hi, delta, xr, side, has_side, patch_mask, te,
                              perr, weight_table, counts, totals, snap, since, coded, epoch, refresh, refreshed,
                              raw_words, num_bits, out, lut, nx, lin, vthr, flat_mode, bias_ring, bias_sum, bias_count,
                              bias_corr, np.zeros(NUM_PREDICTORS, dtype=np.int64),
                              np.zeros(NUM_PREDICTORS, dtype=np.int64), dirty, dirty_list,
                              np.zeros(num_buckets, dtype=np.bool_),
                              np.empty(num_buckets + 1, dtype=np.int64))


@refcount_free
def _decode_per_bucket(words, decoders, streams, cdfs, slots, lo, hi, delta, xr, side, has_side, patch_mask, te, perr,
                       weight_table, counts, totals, snap, since, coded, epoch, refresh, refreshed, raw_words, num_bits,
                       out, lut, nx, lin, vthr, flat_mode, bias_ring, bias_sum, bias_count, bias_corr, sub, weights,
                       dirty, dirty_list, touched, touched_list):
    """Layout 0 (and format 4's single stream): the tokens are in coding order, so every pixel
    decodes as soon as it is predicted (the encoder's loop, run backwards: no per-wavefront
    arrays). Bucket b's tokens are in stream streams[b]."""
    height, width = out.shape
    num_tokens = counts.shape[1]
    step = 2 * delta + 1
    num_pred = _num_pred(has_side, lin)
    num_dirty = 0
    bitpos = 0
    # only a bucket that coded in the last wavefront can have become due for a refresh (the
    # same refreshes as _refresh's scan of all): with format 4's bands (1,280 buckets) the
    # scan of all was a fifth of a banded radiograph's decode (RG3 782 -> 624 ms)
    num_touched = 0
    for t in range(2 * (height - 1) + width):
        num_dirty = _refresh_noted_bias(bias_sum, bias_count, bias_corr, dirty, dirty_list, num_dirty)
        for k in range(num_touched):
            b = touched_list[k]
            touched[b] = False
            if _refresh_one(b, counts, snap, since, coded, epoch, refresh):
                quantise_cdf(snap, b, cdfs)
                fill_slots(cdfs, b, slots)
        num_touched = 0
        slot = t & (RING - 1)
        i_start, i_end = _wave_rows(t, height, width)
        for i in range(i_start, i_end + 1):
            j = t - 2 * i
            pred8, b, lean = _predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, sub, weights,
                                      weight_table, step, lut, nx, lo, lin, vthr, flat_mode, bias_ring, bias_corr)
            pred = min(max((pred8 + 3) >> EXTRA_BITS, lo), hi)
            tok = decode_symbol_slotted(cdfs, slots, b, num_tokens, words, decoders, streams[b])
            if tok < 0:
                return ERR_INVALID
            value, bitpos = _token_value(tok, raw_words, bitpos, pred, lean, step, lo, hi)
            out[i, j] = value
            _update(slot, i, j > 0, value, pred8, sub, num_pred, xr, te, perr, counts, totals, b, tok, since, coded,
                    bias_ring, bias_sum, bias_count)
            num_touched = _note_touched(b, touched, touched_list, num_touched)
        num_dirty = _note_bias_contexts(t, height, width, bias_ring, dirty, dirty_list, num_dirty)
        if bitpos > num_bits:
            return ERR_RAW_OVERRUN
    return OK


@njit(cache=True, nogil=True)
def _decode_shared(words, decoders, cdfs, lo, hi, delta, xr, side, has_side, patch_mask, te, perr, weight_table, counts,
                   totals, snap, since, coded, epoch, refresh, refreshed, raw_words, num_bits, out, lut, nx, lin, vthr,
                   flat_mode, bias_ring, bias_sum, bias_count, bias_corr):
    """Layout 1: the shared stream is in (wavefront, bucket, row) order, so a wavefront is
    predicted whole, decoded bucket by bucket, then finished."""
    height, width = out.shape
    num_buckets, num_tokens = counts.shape
    max_len = min(height, width) + 1
    pred8s = np.empty(max_len, dtype=np.int64)
    preds = np.empty(max_len, dtype=np.int64)
    buckets = np.empty(max_len, dtype=np.int64)
    leans = np.empty(max_len, dtype=np.int64)
    subs = np.zeros((max_len, NUM_PREDICTORS), dtype=np.int64)
    order = np.empty(max_len, dtype=np.int64)
    tokens = np.empty(max_len, dtype=np.int64)
    grouped = np.empty(max_len, dtype=np.int64)
    active = np.empty((num_buckets, 2), dtype=np.int64)
    dirty, dirty_list = _bias_lists(bias_sum)
    num_dirty = 0
    bitpos = 0
    for t in range(2 * (height - 1) + width):
        num_dirty = _refresh_noted_bias(bias_sum, bias_count, bias_corr, dirty, dirty_list, num_dirty)
        k, num_active, any_refreshed = _prepare_wavefront(t, lo, hi, delta, xr, side, has_side, patch_mask, te, perr,
                                                          weight_table, counts, snap, since, coded, epoch, refresh,
                                                          refreshed, pred8s, preds, buckets, leans, subs, order, active,
                                                          height, width, lut, nx, lin, vthr, flat_mode, bias_ring,
                                                          bias_sum, bias_count, bias_corr)
        if any_refreshed:
            for b in range(num_buckets):
                if refreshed[b]:
                    quantise_cdf(snap, b, cdfs)
        pos = 0
        for a in range(num_active):
            b = active[a, 0]
            for _ in range(active[a, 1]):
                symbol = decode_symbol(cdfs, b, num_tokens, words, decoders, 0)
                if symbol < 0:
                    return ERR_INVALID
                grouped[pos] = symbol
                pos += 1
        bitpos = _finish_wavefront(t, grouped[:pos], order, tokens, lo, hi, delta, raw_words, bitpos, out, xr, te,
                                   perr, counts, totals, since, coded, pred8s, preds, buckets, leans, subs, has_side,
                                   lin, bias_ring, bias_sum, bias_count)
        num_dirty = _note_bias_contexts(t, height, width, bias_ring, dirty, dirty_list, num_dirty)
        if bitpos > num_bits:
            return ERR_RAW_OVERRUN
    return OK
