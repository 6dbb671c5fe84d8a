"""constriction 0.5.0's queue range coder and its fast categorical model, in numba.

The residual coder's streams were written by `constriction.stream.queue.RangeEncoder` (32-bit
words, 64-bit state, 24-bit probabilities) with `Categorical(counts.astype(float64),
perfect=False)` models. Calling constriction once per (wavefront, bucket) cost more than the
coding itself, so the plane kernels code and decode every symbol here, inside one numba call,
producing and reading exactly the words constriction does (tests/test_range_coder.py checks it
against constriction, which stays the reference).

Encoder state is a uint64 row [lower, range, num_inverted, first_inverted_word, words
written]; decoder state a uint64 row [lower, range, point, read position, end position]. All
arithmetic is uint64 and wraps like Rust's `wrapping_*` (numba's unsigned integers wrap).

The per-symbol functions take whole 2-D arrays and a row index (`cdfs, row`, `states, s`),
never a row view: each view numba makes in an ordinary kernel costs atomic reference-count
updates, which cost more than the coding (see `jit.refcount_free`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .jit import refcount_free

PRECISION = 24
_ONE_PREC = np.uint64(1 << PRECISION)
_PREC = np.uint64(PRECISION)
_WORD = np.uint64(32)
_WORD_MASK = np.uint64(0xFFFFFFFF)
_STATE_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)
_RANGE_MIN = np.uint64(1 << 32)  # invariant of both coders: range >= 2**(64 - 32)
_U0 = np.uint64(0)
_U1 = np.uint64(1)

# encoder state row
E_LOWER, E_RANGE, E_NUM_INVERTED, E_FIRST_INVERTED, E_WRITTEN = 0, 1, 2, 3, 4
# decoder state row
D_LOWER, D_RANGE, D_POINT, D_POS, D_END = 0, 1, 2, 3, 4

OK = 0
ERR_INVALID = -1  # constriction's DecoderFrontendError::InvalidData
ERR_FULL = -2  # word buffer too small (a bug: the capacity bound below is exact)


@njit(cache=True)
def word_capacity(num_symbols):
    """Upper bound on the words one stream of `num_symbols` symbols takes, seal included.

    Each symbol shrinks the range by at most 2**24 / (1 - 2**-8) (every probability is >= 1
    in 2**24, and range >> 24 loses < 2**-8 since range >= 2**32), one word leaves per 2**32:
    < 0.7502 words per symbol, plus at most 2 for the seal.
    """
    return num_symbols - num_symbols // 4 + num_symbols // 256 + 4


@njit(cache=True)
def quantise_cdf(counts, r, cdfs):
    """Mirror of constriction's `fast_quantized_cdf` + `from_fixed_point_cdf` (what
    `Categorical(counts.astype(float64), perfect=False)` builds): every symbol gets 1 plus
    its truncated share of the 2**24 - n free weight. Row r of `counts` gives row r of `cdfs`:
    n + 1 entries, cdfs[r, n] = 2**24.

    The counts are integers < 2**53, so the float sums are exact in any order, and there is
    one rounded multiply per entry, as in constriction.
    """
    n = counts.shape[1]
    total = 0.0
    for i in range(n):
        total += np.float64(counts[r, i])
    scale = np.float64((1 << PRECISION) - n) / total
    cumulative = 0.0
    for i in range(n):
        cdfs[r, i] = np.uint32(np.int64(cumulative * scale) + i)  # f64 -> u32 `as`: truncation
        cumulative += np.float64(counts[r, i])
    cdfs[r, n] = np.uint32(1 << PRECISION)


@njit(cache=True, nogil=True)
def quantise_rows(counts, cdfs):
    """quantise_cdf for every row of `counts` into the rows of `cdfs`."""
    for r in range(counts.shape[0]):
        quantise_cdf(counts, r, cdfs)


SLOT_BITS = 8  # the decoder's symbol lookup: 2**8 slots per model, each the symbol its search starts from
_SLOT_SHIFT = PRECISION - SLOT_BITS


@njit(cache=True, inline="always")
def fill_slots(cdfs, r, slots):
    """slots[r, k] = the last symbol whose cdfs[r] entry is <= k * 2**(24 - SLOT_BITS): where
    `decode_symbol_slotted`'s search for a quantile in slot k starts (rebuilt with the cdf).
    Filled symbol by symbol (the slots up to the next cdf entry), not slot by slot with a
    search: one refresh in a hundred pixels rebuilds a table, and the search's exits were
    mispredicted branches (the 512^2 CT decodes in 15.2 instead of 16.2 ms)."""
    num_symbols = cdfs.shape[1] - 1
    k = 0
    for symbol in range(num_symbols - 1):
        # the slots before the next symbol's cdf entry start in this symbol
        end = (np.int64(cdfs[r, symbol + 1]) + (1 << _SLOT_SHIFT) - 1) >> _SLOT_SHIFT
        while k < end:
            slots[r, k] = symbol
            k += 1
    while k < 1 << SLOT_BITS:
        slots[r, k] = num_symbols - 1
        k += 1


@njit(cache=True, inline="always")
def _write(words, base, cap, states, s, word):
    k = states[s, E_WRITTEN]
    if k >= cap:
        return False
    words[base + np.int64(k)] = np.uint32(word & _WORD_MASK)
    states[s, E_WRITTEN] = k + _U1
    return True


@njit(cache=True, inline="always")
def encoder_init(states, s):
    """RangeEncoder::new() in row s: lower 0, range the largest state, normal situation."""
    states[s, E_LOWER] = _U0
    states[s, E_RANGE] = _STATE_MAX
    states[s, E_NUM_INVERTED] = _U0
    states[s, E_FIRST_INVERTED] = _U0
    states[s, E_WRITTEN] = _U0


@njit(cache=True, inline="always")
def _flush_inverted(words, base, cap, states, s, carry):
    """The held-back words of an inverted situation: the first inverted lower word (+1 if the
    lower bound wrapped), then 0 (wrapped) or all ones for the others."""
    first = states[s, E_FIRST_INVERTED]
    rest = _WORD_MASK
    if carry:
        first = (first + _U1) & _WORD_MASK
        rest = _U0
    ok = _write(words, base, cap, states, s, first)
    for _ in range(np.int64(states[s, E_NUM_INVERTED]) - 1):
        ok = ok and _write(words, base, cap, states, s, rest)
    states[s, E_NUM_INVERTED] = _U0
    return ok


@njit(cache=True, inline="always")
def encode_symbol(symbol, cdfs, row, words, base, cap, states, s):
    """Mirror of RangeEncoder::encode_symbol (encoder state row s) with a contiguous
    categorical model's left_cumulative_and_probability (cdf[symbol], cdf[symbol + 1] -
    cdf[symbol]), cdf = cdfs[row]. Returns False only if the word buffer is full."""
    left = np.uint64(cdfs[row, symbol])
    probability = np.uint64(cdfs[row, symbol + 1]) - left
    lower = states[s, E_LOWER]
    scale = states[s, E_RANGE] >> _PREC
    rng = scale * probability
    new_lower = lower + scale * left
    ok = True
    if states[s, E_NUM_INVERTED] > _U0 and new_lower + rng > new_lower:
        ok = _flush_inverted(words, base, cap, states, s, new_lower < lower)  # back to normal
    lower = new_lower
    if rng < _RANGE_MIN:
        rng = rng << _WORD
        lower_word = lower >> _WORD
        lower = lower << _WORD
        if states[s, E_NUM_INVERTED] > _U0:
            states[s, E_NUM_INVERTED] += _U1
        elif lower + rng > lower:
            ok = ok and _write(words, base, cap, states, s, lower_word)
        else:  # the range straddles a wrap: hold the word back (inverted situation)
            states[s, E_NUM_INVERTED] = _U1
            states[s, E_FIRST_INVERTED] = lower_word
    states[s, E_LOWER] = lower
    states[s, E_RANGE] = rng
    return ok


@njit(cache=True)
def encoder_seal(words, base, cap, states, s):
    """Mirror of RangeEncoder::seal (what get_compressed() appends): nothing if no symbol
    was coded, else any held-back words, the word of lower + 2**32 - 1, and a zero word if
    that alone would not identify the range. Returns False only if the buffer is full."""
    lower = states[s, E_LOWER]
    rng = states[s, E_RANGE]
    if rng == _STATE_MAX:
        return True
    point = lower + _WORD_MASK
    ok = True
    if states[s, E_NUM_INVERTED] > _U0:
        ok = _flush_inverted(words, base, cap, states, s, point < lower)
    point_word = point >> _WORD
    ok = ok and _write(words, base, cap, states, s, point_word)
    upper_word = (lower + rng) >> _WORD
    if upper_word == point_word:
        ok = ok and _write(words, base, cap, states, s, _U0)
    return ok


@njit(cache=True, inline="always")
def decoder_init(words, start, end, states, s):
    """Mirror of RangeDecoder(words) (from_compressed / read_point), in decoder state row s:
    the point is the first two words, zero-padded on the right when the stream is shorter."""
    point = _U0
    pos = start
    num_read = 0
    while pos < end and num_read < 2:
        point = (point << _WORD) | np.uint64(words[pos])
        pos += 1
        num_read += 1
    if num_read == 1:
        point = point << _WORD
    states[s, D_LOWER] = _U0
    states[s, D_RANGE] = _STATE_MAX
    states[s, D_POINT] = point
    states[s, D_POS] = np.uint64(pos)
    states[s, D_END] = np.uint64(end)


@njit(cache=True, inline="always")
def _quantile(states, s):
    """The decoder's quantile in [0, 2**24) and its scale, or quantile >= 2**24 where
    constriction reports invalid data."""
    scale = states[s, D_RANGE] >> _PREC
    return (states[s, D_POINT] - states[s, D_LOWER]) // scale, scale


@njit(cache=True, inline="always")
def _consume(cdfs, row, symbol, scale, words, states, s):
    """The decoder's state after `symbol`: narrow the range to it, refill a word if needed.
    Past the end of the words the point is shifted in with zeros, as constriction does."""
    left = np.uint64(cdfs[row, symbol])
    lower = states[s, D_LOWER] + scale * left
    rng = scale * (np.uint64(cdfs[row, symbol + 1]) - left)
    point = states[s, D_POINT]
    if rng < _RANGE_MIN:
        lower = lower << _WORD
        rng = rng << _WORD
        point = point << _WORD
        pos = states[s, D_POS]
        if pos < states[s, D_END]:
            point = point | np.uint64(words[np.int64(pos)])
            states[s, D_POS] = pos + _U1
    states[s, D_LOWER] = lower
    states[s, D_RANGE] = rng
    states[s, D_POINT] = point


@njit(cache=True, inline="always")
def decode_symbol(cdfs, row, num_symbols, words, states, s):
    """Mirror of RangeDecoder::decode_symbol (decoder state row s) with the contiguous
    categorical model cdfs[row]'s quantile_function (the last symbol whose cdf entry is <=
    the quantile). Returns the symbol, or ERR_INVALID where constriction reports invalid
    data."""
    quantile, scale = _quantile(states, s)
    if quantile >= _ONE_PREC:
        return ERR_INVALID
    q = np.uint32(quantile)
    # the last symbol whose cdf entry is <= q (cdf[0] = 0 <= q): a branch-free binary search
    lo = 0
    step = 1
    while 2 * step < num_symbols:  # the largest power of two below num_symbols
        step *= 2
    while step > 0:
        probe = lo + step
        if probe < num_symbols and cdfs[row, probe] <= q:
            lo = probe
        step >>= 1
    _consume(cdfs, row, lo, scale, words, states, s)
    return lo


@njit(cache=True, inline="always")
def decode_symbol_slotted(cdfs, slots, row, num_symbols, words, states, s):
    """decode_symbol, the symbol found from its quantile's slot (`fill_slots`) by a short
    linear scan instead of a binary search: the same symbol (the last whose cdf entry is <= the
    quantile), with a shorter chain of dependent loads for the likely ones."""
    quantile, scale = _quantile(states, s)
    if quantile >= _ONE_PREC:
        return ERR_INVALID
    q = np.uint32(quantile)
    symbol = np.int64(slots[row, np.int64(quantile >> np.uint64(_SLOT_SHIFT))])
    while symbol + 1 < num_symbols and cdfs[row, symbol + 1] <= q:
        symbol += 1
    _consume(cdfs, row, symbol, scale, words, states, s)
    return symbol


@njit(cache=True)
def encode_sequence(symbols, cdf_ids, cdfs, words, base, cap):
    """Encode symbols[k] with model cdfs[cdf_ids[k]] into a fresh stream at words[base:] and
    seal it; returns the number of words (ERR_FULL if they do not fit in cap)."""
    return _encode_sequence(symbols, cdf_ids, cdfs, words, base, cap, np.empty((1, 5), dtype=np.uint64))


@refcount_free
def _encode_sequence(symbols, cdf_ids, cdfs, words, base, cap, states):
    encoder_init(states, 0)
    for k in range(symbols.shape[0]):
        if not encode_symbol(np.int64(symbols[k]), cdfs, np.int64(cdf_ids[k]), words, base, cap, states, 0):
            return ERR_FULL
    if not encoder_seal(words, base, cap, states, 0):
        return ERR_FULL
    return np.int64(states[0, E_WRITTEN])


@njit(cache=True)
def decode_sequence(words, cdf_ids, cdfs, out):
    """Decode len(out) symbols from one stream, symbol k with cdfs[cdf_ids[k]]; returns OK or
    ERR_INVALID."""
    return _decode_sequence(words, cdf_ids, cdfs, out, np.empty((1, 5), dtype=np.uint64))


@refcount_free
def _decode_sequence(words, cdf_ids, cdfs, out, states):
    decoder_init(words, 0, words.shape[0], states, 0)
    num_symbols = cdfs.shape[1] - 1
    for k in range(out.shape[0]):
        symbol = decode_symbol(cdfs, np.int64(cdf_ids[k]), num_symbols, words, states, 0)
        if symbol < 0:
            return symbol
        out[k] = symbol
    return OK
