"""Causal context model for residual coding (numba, integer arithmetic only).

Every pixel gets a prediction from already-coded neighbours, blended JPEG XL-style from
sub-predictors weighted by their recent local errors (libjxl's "weighted predictor" plus
LOCO-I's median edge detector), and, where it pays, two predictors guided by the low-rank
reconstruction R (x_W + R - R_W, x_N + R - R_N).
The residual is mapped to a small token alphabet (exact for small values, exponent plus two
mantissa bits above that, remaining low bits raw), and each token is coded with an adaptive
histogram chosen by a context *bucket*: the quantised size of the neighbours' true errors.

Pixels are visited in **wavefront order** (t = 2*row + col, then row): every neighbour the
model reads (W, WW, N, NW, NE) lies on one of the three previous wavefronts, so the decoder
can predict a whole wavefront at once and fetch its tokens from the entropy coder in a few
batched calls, and the model keeps its per-pixel state in a ring of RING wavefronts (small,
cache-resident, independent of image size). Histograms are snapshotted ("refreshed") only at
wavefront starts, identically in encoder and decoder. Everything here is integer arithmetic,
so decode is bit-exact on any machine.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .tokens import MAX_SPAN, NUM_TOKENS, floor_log2, token_base, token_of  # noqa: F401
from .tokens import floor_log2 as _floor_log2
from . import blend
from .blend import EXTRA_BITS, NUM_PREDICTORS, PLAIN_PREDICTORS, _weighted_average, _weighted_average_parity
from .linear_predictor import (LIN_CLASSES, LIN_PARITY_CLASSES, LIN_SHIFT, LIN_TAPS, LIN_TAPS_WIDE,  # noqa: F401
                               NO_LINEAR, _lin_class, _linear, _position_parity, _tap)
NUM_LEVELS = 40  # activity levels, two per octave
NUM_BUCKETS = 2 * NUM_LEVELS  # x whether the nearest neighbours carry most of the error
COUNT_INCREMENT = 32
COUNT_LIMIT = 1 << 16
PRIOR_WEIGHT = 1024.0
# When a bucket's coding histogram is refreshed (at a wavefront start): once it has coded
# min_segment + coded/2**shift symbols since the last refresh. Formats 1-4: (16, 2). Format 5
# refreshes about 4x as often: the dev corpus codes 0.51% (CT), 0.18% (MR), 0.13% (CR) smaller
# for ~4% more CT decode time (a refresh rebuilds a cdf and its slots; (1, 8), nearly every
# symbol, gains 0.2% more on CT for +40% decode time)
MIN_SEGMENT, REFRESH_SHIFT = 16, 2
V5_REFRESH = (4, 4)
# Format 6: a plane predicted with one linear weight set per parity (an image interpolated 2x)
# also keeps one histogram set per parity: its interpolated pixels are nearly exact, its original
# ones carry all the noise, and their neighbours' errors cannot tell them apart. Signalled to the
# kernels by this value of `nx` (the extra classes per activity bucket; formats 1-5: >= 1)
PARITY_CONTEXT = -LIN_PARITY_CLASSES


def prior_counts() -> np.ndarray:
    """Initial histogram per bucket: a geometric prior whose mean follows the bucket.

    Built from float multiply/divide only (no transcendental functions), so it is the same
    on every IEEE machine; then rounded to integer counts >= 1.
    """
    counts = np.ones((NUM_BUCKETS, NUM_TOKENS), dtype=np.int64)
    for b in range(NUM_BUCKETS):
        level = b % NUM_LEVELS
        # level holds a summed |error| (in 1/8 pixel over 4 neighbours) of about 2**((level-1)/2);
        # ldexp is exact, so the table is the same on every machine
        mean_abs = max(0.25, math.ldexp(1.41 if (level - 1) % 2 else 1.0, (level - 1) // 2) / 32.0)
        ratio = (2.0 * mean_abs) / (2.0 * mean_abs + 1.0)  # geometric over zig-zag values
        p = 1.0
        mass = np.zeros(NUM_TOKENS)
        for u in range(1 << 14):
            t, _ = token_of(u)
            mass[t] += p
            p *= ratio
            if p < 1e-12:
                break
        total = mass.sum()
        counts[b] = np.maximum(1, np.floor(mass / total * PRIOR_WEIGHT)).astype(np.int64)
    return counts


_PRIOR = prior_counts()
V1_LUT = np.arange(NUM_BUCKETS, dtype=np.int64)  # format 1: the bucket is the activity context itself


@njit(cache=True, inline="always")
def _bucket_of(activity):
    if activity <= 0:
        return 0
    n = _floor_log2(activity)
    half = (activity >> (n - 1)) & 1 if n >= 1 else 0
    b = 1 + 2 * n + half
    return b if b < NUM_LEVELS else NUM_LEVELS - 1


GRAD_SHIFT = 2
FLIP_FRAC = 1
FLIP_TE = 1
RING = blend.RING  # wavefronts of per-pixel state kept; the model looks back at most 7 (format 5 wide taps)


@njit(cache=True, inline="always")
def _wave_rows(t, height, width):
    """First and last row on wavefront t."""
    i_start = 0 if t < width else (t - width) // 2 + 1
    i_end = min(height - 1, t // 2)
    return i_start, i_end


def num_wavefronts(height: int, width: int) -> int:
    return 2 * (height - 1) + width


@njit(cache=True, inline="always")
def _predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, sub, weights, weight_table, step, lut, nx, lo,
             lin, vthr, flat_mode, bias_ring, bias_corr):
    """Prediction (with EXTRA_BITS fractional bits) and context activity of pixel (i, j) on
    wavefront t = 2i + j.

    `xr`, `te`, `perr` are rings indexed [wavefront % RING, row]: W is (t-1, i), NE (t-1, i-1),
    N (t-2, i-1), WW (t-2, i), NW (t-3, i-1). `side` is the raster
    reconstruction. Writes the sub-predictions into `sub` for the later error update.
    """
    has_w = j > 0
    has_n = i > 0
    has_ne = has_n and j + 1 < width
    has_nw = has_n and has_w
    s1 = (t - 1) & (RING - 1)
    s2 = (t - 2) & (RING - 1)
    s3 = (t - 3) & (RING - 1)
    if has_w:
        w = xr[s1, i]
    elif has_n:
        w = xr[s2, i - 1]
    else:
        w = 0
    n = xr[s2, i - 1] if has_n else w
    ne = xr[s1, i - 1] if has_ne else n
    nw = xr[s3, i - 1] if has_nw else w

    te_w = te[s1, i] if has_w else 0
    te_n = te[s2, i - 1] if has_n else 0
    te_nw = te[s3, i - 1] if has_nw else te_n
    te_ne = te[s1, i - 1] if has_ne else te_n

    _plain_predictions(sub, w, n, nw, ne, te_w, te_n, te_nw, te_ne)
    num_pred = PLAIN_PREDICTORS
    if has_side:
        # R jumps at patch edges; across one, its gradient says nothing
        r = side[i, j]
        r_w = side[i, j - 1] if (has_w and j & patch_mask) else r
        r_n = side[i - 1, j] if (has_n and i & patch_mask) else r
        sub[PLAIN_PREDICTORS] = (w + r - r_w) << EXTRA_BITS
        sub[PLAIN_PREDICTORS + 1] = (n + r - r_n) << EXTRA_BITS
        num_pred = PLAIN_PREDICTORS + 2
    if lin.shape[0] > 0:  # format 2: the trained linear predictor joins the blend
        sub[num_pred] = _linear(t, i, j, width, xr, w, lin, abs(te_w) + abs(te_n) + abs(te_nw) + abs(te_ne))
        num_pred += 1

    if nx == PARITY_CONTEXT:  # format 6: the blend also weighs errors at pixels of the same parity
        pred = _weighted_average_parity(sub, num_pred, perr, weights, weight_table, t, s1, s2, i, j, width, has_w,
                                        has_n, has_ne)
    else:
        pred = _weighted_average(sub, num_pred, perr, weights, weight_table, s1, s2, i, has_w, has_n, has_ne)

    w8 = w << EXTRA_BITS
    # where the neighbours' errors disagree in sign, keep the prediction within W, N and NE
    # (bitwise tests and a select: the data mispredicts branches here)
    same_sign = ((te_n >= 0) == (te_w >= 0)) & ((te_n >= 0) == (te_ne >= 0))
    n8 = n << EXTRA_BITS
    ne8 = ne << EXTRA_BITS
    clamped = max(min(w8, min(n8, ne8)), min(max(w8, max(n8, ne8)), pred))
    pred = pred if same_sign else clamped

    # format 4: where W, N, NW and NE are all equal (air, padding, saturation) predict W itself,
    # with histograms of their own: the blend's farther taps and corrections drift off it there
    flat = flat_mode & has_n & (w == n) & (n == nw) & (nw == ne)
    if flat:
        pred = w8
    bucket, lean = _context(pred, w, n, nw, ne, te_w, te_n, te_nw, te_ne, step)
    if bias_corr is not None and bias_corr.shape[0] > 0:  # format 3: bias cancellation (None: compiled out)
        # format 6: a parity plane's corrections are per parity too (its interpolated pixels
        # carry the interpolation's rounding, its original ones do not)
        parity = _position_parity(i, j) if nx == PARITY_CONTEXT else -1
        corrected = _cancel_bias(t & (RING - 1), i, pred, bucket, w, n, nw, ne, te_w, te_n, te_nw, te_ne, bias_ring,
                                 bias_corr, parity)
        if not flat:
            pred = corrected
    if flat and bucket != 0:
        bucket += NUM_BUCKETS
    if nx > 1:  # format 2: a finer context, mapped to a bucket by the trained table
        bucket = bucket * nx + _extra_context(sub, num_pred, w, n, nw, ne, te_w, te_n, te_nw, te_ne, step, lo)
    elif nx == PARITY_CONTEXT:  # format 6, interpolated planes: histograms per position parity
        bucket = bucket * LIN_PARITY_CLASSES + _position_parity(i, j)
    if vthr.shape[0] > 0:  # format 4: the bucket's histogram also depends on the local intensity
        bucket = bucket * (vthr.shape[0] + 1) + _value_class(w, n, vthr)
    return pred, lut[bucket], lean


@njit(cache=True, inline="always")
def _plain_predictions(sub, w, n, nw, ne, te_w, te_n, te_nw, te_ne):
    """The PLAIN_PREDICTORS sub-predictions (EXTRA_BITS fractional bits) into sub[0..6]:
    libjxl's four weighted-predictor ones (each corrected by the neighbours' errors), LOCO-I's
    median edge detector, the plain gradient and the mean of W and NE."""
    w8 = w << EXTRA_BITS
    n8 = n << EXTRA_BITS
    ne8 = ne << EXTRA_BITS
    sub[0] = w8 + ne8 - n8
    sub[1] = n8 - (((te_w + te_n + te_ne) * 16) >> 5)
    sub[2] = w8 - (((te_w + te_n + te_nw) * 10) >> 5)
    sub[3] = n8 - ((te_nw * 7 + te_n * 7 + te_ne * 7) >> 5)
    # LOCO-I's median edge detector: the median of W, N and the gradient W + N - NW (min/max,
    # not LOCO-I's three branches, which the data mispredicts)
    gradient = w + n - nw
    sub[4] = max(min(w, n), min(max(w, n), gradient)) << EXTRA_BITS
    sub[5] = gradient << EXTRA_BITS  # plain gradient (unclamped)
    sub[6] = (w8 + ne8) >> 1


@njit(cache=True, inline="always")
def _value_class(w, n, vthr):
    """Format 4: which of the plane's intensity bands the mean of W and N falls in (the number
    of thresholds at or below it). Noise depends on intensity (photon counts in a radiograph,
    tissue versus air in CT), so each band learns its own histograms."""
    m = (w + n + 1) >> 1
    c = 0
    for k in range(vthr.shape[0]):
        c += m >= vthr[k]
    return c


BIAS_CONTEXTS = 16 * NUM_BUCKETS  # texture pattern (4 neighbours above/below the prediction) x bucket
# (format 6: x 4 position parities on a parity plane, ModelState's parity_context)
BIAS_MIN_COUNT = 8  # errors a context must have seen before its mean corrects predictions
BIAS_HALVE_AT = 256  # then halve its sums: the mean follows the image
BIAS_CLIP_SHIFT = 2  # an error counts at most (its neighbours' |errors| / 4 + 1 pixel): edges don't skew it
NO_BIAS = np.zeros(0, dtype=np.int64)


@njit(cache=True, inline="always")
def _cancel_bias(slot, i, pred, bucket, w, n, nw, ne, te_w, te_n, te_nw, te_ne, bias_ring, bias_corr, parity):
    """CALIC's bias cancellation (format 3): add the mean error this context has seen, in
    1/8 pixel. The context is the activity bucket and which neighbours lie above the
    prediction, and (format 6, parity >= 0) the pixel's position parity; perfectly flat
    surroundings (level 0) are left alone, their prediction is exact.
    Records (context, uncorrected prediction, clip) for `_update`."""
    r = pred >> EXTRA_BITS
    ctx = ((w > r) + 2 * (n > r) + 4 * (nw > r) + 8 * (ne > r)) * NUM_BUCKETS + bucket
    if parity >= 0:
        ctx = ctx * LIN_PARITY_CLASSES + parity
    bias_ring[slot, i, 0] = ctx
    bias_ring[slot, i, 1] = pred
    bias_ring[slot, i, 2] = ((abs(te_w) + abs(te_n) + abs(te_nw) + abs(te_ne)) >> BIAS_CLIP_SHIFT) + (1 << EXTRA_BITS)
    if bucket % NUM_LEVELS != 0:
        pred += bias_corr[ctx]
    return pred


@njit(cache=True)
def _refresh_bias(bias_sum, bias_count, bias_corr):
    """At a wavefront start (encoder and decoder alike): the corrections of this wavefront."""
    for c in range(bias_corr.shape[0]):
        _refresh_bias_one(c, bias_sum, bias_count, bias_corr)


@njit(cache=True, inline="always")
def _refresh_bias_one(c, bias_sum, bias_count, bias_corr):
    """_refresh_bias for context c: its mean error, rounded, once it has seen enough."""
    if bias_count[c] >= BIAS_MIN_COUNT:
        bias_corr[c] = (bias_sum[c] + (bias_count[c] >> 1)) // bias_count[c]


@njit(cache=True, inline="always")
def _num_pred(has_side, lin):
    return (PLAIN_PREDICTORS + 2 if has_side else PLAIN_PREDICTORS) + (1 if lin.shape[0] > 0 else 0)


NUM_EXTRA = 36  # classes of _extra_context


@njit(cache=True, inline="always")
def _extra_context(sub, num_pred, w, n, nw, ne, te_w, te_n, te_nw, te_ne, step, lo):
    """Context beyond the activity bucket (format 2): how much the sub-predictors disagree,
    the local edge direction and how strongly the neighbours' errors lean one way, each
    relative to the local activity (so the classes mean the same at any bit depth)."""
    lo = sub[0]
    hi = sub[0]
    for k in range(1, num_pred):
        lo = min(lo, sub[k])
        hi = max(hi, sub[k])
    spread = hi - lo
    act = abs(te_w) + abs(te_n) + abs(te_nw) + abs(te_ne) + 8 * step
    if 4 * spread <= act:
        c_spread = 0
    elif 2 * spread <= act:
        c_spread = 1
    elif spread <= act:
        c_spread = 2
    else:
        c_spread = 3
    # neighbours at the plane's lowest value: background (air, padding) borders
    floor = (w == lo) + (n == lo) + (nw == lo) + (ne == lo)
    c_floor = 0 if floor == 0 else (2 if floor == 4 else 1)
    bias = abs(te_w + te_n + te_nw + te_ne)
    c_bias = 0 if 4 * bias <= act else (1 if bias <= act else 2)
    return (c_spread * 3 + c_floor) * 3 + c_bias


@njit(cache=True, inline="always")
def _context(pred, w, n, nw, ne, te_w, te_n, te_nw, te_ne, step):
    """The histogram bucket of a pixel and the sign its residual probably has."""
    activity = abs(te_w) + abs(te_n) + abs(te_nw) + abs(te_ne)
    activity += ((abs(w - nw) + abs(n - nw) + abs(ne - n)) << EXTRA_BITS) >> GRAD_SHIFT
    if step > 1:
        activity //= step
    bucket = _bucket_of(activity)
    if bucket > 2:
        # second context dimension: are the nearest neighbours' errors the larger part?
        bucket += NUM_LEVELS * (abs(te_w) + abs(te_n) > abs(te_nw) + abs(te_ne))
    # which sign the residual probably has: the neighbours' summed error (te = prediction -
    # value > 0 means we predict too high) and the rounding of the prediction
    lean = FLIP_FRAC * (pred - (((pred + 3) >> EXTRA_BITS) << EXTRA_BITS)) - FLIP_TE * (te_w + te_n + te_nw + te_ne)
    return bucket, lean


@njit(cache=True, inline="always")
def _quantise(e, delta):
    """Near-lossless quantisation of a prediction error (JPEG-LS style); delta 0 = lossless."""
    if delta == 0:
        return e
    s = 2 * delta + 1
    if e >= 0:
        return (e + delta) // s
    return -((-e + delta) // s)


@njit(cache=True)
def _refresh(counts, snap, since, coded, epoch, refresh, refreshed):
    """At a wavefront start: refresh each bucket's coding histogram once it has seen enough
    new symbols (more often early on, while the histogram is still learning)."""
    any_refreshed = False
    for b in range(counts.shape[0]):
        refreshed[b] = _refresh_one(b, counts, snap, since, coded, epoch, refresh)
        any_refreshed |= refreshed[b]
    return any_refreshed


@njit(cache=True, inline="always")
def _copy_row(src, r, dst, d):
    """dst[d, :] = src[r, :] as a loop: a slice assignment needs numba's reference counting,
    which the kernels of jit.refcount_free compile without."""
    for k in range(src.shape[1]):
        dst[d, k] = src[r, k]


@njit(cache=True, inline="always")
def _refresh_one(b, counts, snap, since, coded, epoch, refresh):
    """_refresh for bucket b: whether its histogram was refreshed. Only a bucket that coded
    symbols since the last wavefront start can become due. refresh: (min_segment, shift)."""
    if since[b] >= refresh[0] + (coded[b] >> refresh[1]):
        _copy_row(counts, b, snap, b)
        since[b] = 0
        epoch[b] += 1
        return True
    return False


@njit(cache=True, inline="always")
def _note_touched(b, touched, touched_list, num_touched):
    """Note that bucket b coded a symbol on this wavefront (once per wavefront); returns the
    list's new length. Only noted buckets can become due at the next wavefront start, so the
    kernels check those alone (_refresh_one) instead of every bucket.
    No branch (which bucket comes next is a coin toss to the predictor: the 512^2 CT decodes
    ~5% faster with _note_bias_contexts alike): b is always written, and kept only if new, so
    touched_list needs one spare entry beyond the buckets."""
    touched_list[num_touched] = b
    num_touched += 1 - touched[b]
    touched[b] = True
    return num_touched


@njit(cache=True, inline="always")
def _update(slot, i, has_w, value, pred8, sub, num_pred, xr, te, perr, counts, totals, b, tok, since, coded,
            bias_ring, bias_sum, bias_count):
    xr[slot, i] = value
    v8 = value << EXTRA_BITS
    te[slot, i] = pred8 - v8
    if bias_sum is not None and bias_sum.shape[0] > 0:  # None: compiled out (ModelState.bias_state)
        ctx = bias_ring[slot, i, 0]
        clip = bias_ring[slot, i, 2]
        bias_sum[ctx] += min(max(v8 - bias_ring[slot, i, 1], -clip), clip)
        bias_count[ctx] += 1
        if bias_count[ctx] >= BIAS_HALVE_AT:
            bias_sum[ctx] = bias_sum[ctx] // 2
            bias_count[ctx] >>= 1
    w_slot = (slot - 1) & (RING - 1)
    for k in range(num_pred):
        e = (abs(sub[k] - v8) + 3) >> EXTRA_BITS
        perr[slot, i, k] = e
        perr[slot, i, NUM_PREDICTORS + k] = e + (perr[w_slot, i, k] if has_w else 0)
    _count(counts, totals, b, tok, since, coded)


@njit(cache=True, inline="always")
def _count(counts, totals, b, tok, since, coded):
    """Bucket b's adaptive histogram learns token tok (halved when it grows too large, so it
    follows the image)."""
    counts[b, tok] += COUNT_INCREMENT
    totals[b] += COUNT_INCREMENT
    if totals[b] > COUNT_LIMIT:
        total = 0
        for t in range(counts.shape[1]):
            counts[b, t] = (counts[b, t] + 1) >> 1
            total += counts[b, t]
        totals[b] = total
    since[b] += 1
    coded[b] += 1


class ModelState:
    """What the encoder and the decoder evolve identically, pixel by pixel."""

    def __init__(self, height: int, width: int, side: np.ndarray | None, patch: int = 8,
                 prior: np.ndarray | None = None, bias: bool = False,
                 refresh: tuple[int, int] = (MIN_SEGMENT, REFRESH_SHIFT), parity_context: bool = False):
        self.height, self.width = height, width
        self.patch_mask = patch - 1
        self.xr = np.zeros((RING, height), dtype=np.int64)
        self.te = np.zeros((RING, height), dtype=np.int64)
        self.perr = np.zeros((RING, height, 2 * NUM_PREDICTORS), dtype=np.int64)
        self.has_side = side is not None
        if side is not None:
            self.side = np.ascontiguousarray(side, dtype=np.int64)
        else:
            self.side = np.zeros((1, 1), dtype=np.int64)
        prior = _PRIOR if prior is None else prior  # format 2: the trained initial histograms
        buckets = prior.shape[0]
        self.counts = prior.astype(np.int64).copy()
        self.totals = self.counts.sum(axis=1)
        self.snap = self.counts.copy()
        self.since = np.zeros(buckets, dtype=np.int64)
        self.coded = np.zeros(buckets, dtype=np.int64)
        self.epoch = np.zeros(buckets, dtype=np.int64)
        self.refresh = np.array(refresh, dtype=np.int64)  # (min_segment, shift): _refresh_one
        self.refreshed = np.zeros(buckets, dtype=np.bool_)
        # format 3's bias cancellation (size 0: off)
        contexts = (BIAS_CONTEXTS * (LIN_PARITY_CLASSES if parity_context else 1)) if bias else 0
        self.bias_ring = np.zeros((RING, height if bias else 0, 3), dtype=np.int64)
        self.bias_sum = np.zeros(contexts, dtype=np.int64)
        self.bias_count = np.zeros(contexts, dtype=np.int64)
        self.bias_corr = np.zeros(contexts, dtype=np.int64)

    def bias_state(self) -> tuple:
        """(bias_ring, bias_sum, bias_count, bias_corr) for the kernels, or four Nones when bias
        cancellation is off: numba then compiles the kernels without its code. (A size test
        at run time cost formats 1 and 2 a quarter of their coding speed.)"""
        if self.bias_sum.shape[0] == 0:
            return (None, None, None, None)
        return (self.bias_ring, self.bias_sum, self.bias_count, self.bias_corr)
