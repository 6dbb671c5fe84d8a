"""Training the residual coder's context tables (format 2) to minimise code length.

The context model's predictions do not depend on how contexts map to histograms, so one pass
per image records every pixel's fine context (activity bucket x `NUM_EXTRA` classes) and
token. Training then
  1. counts tokens per fine context over the training columns of the corpus,
  2. merges fine contexts greedily (agglomerative, each merge the one that adds the fewest
     bits of static code length) down to the requested number of buckets: a trained context
     quantisation, as in Wu's context quantisation / TCT's trained context trees,
  3. gives each bucket its merged histogram, scaled to `prior_weight` integer counts, as the
     adaptive histogram's starting point,
and everything the decoder uses is an integer table: bit-exact by construction.
Figures are the adaptive code length of the validation columns (`adaptive_bits`), which
follows the coder's own count updates (without its snapshot delay).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numba import njit

from ..codec import blend
from ..codec import context_model as cm
from ..codec.residual_coder import ContextTables
from ..codec.tokens import NUM_TOKENS, token_of



@njit(cache=True)
def _dump(x, lo, hi, xr, side, has_side, patch_mask, te, perr, lut, nx, out_ctx, out_tok, out_nraw, out_col):
    """Per pixel in coding order: fine context, token, raw bits and column (lossless, format-1 model)."""
    height, width = x.shape
    sub = np.zeros(cm.NUM_PREDICTORS, dtype=np.int64)
    weights = np.zeros(cm.NUM_PREDICTORS, dtype=np.int64)
    num_pred = cm.NUM_PREDICTORS if has_side else cm.PLAIN_PREDICTORS
    counts = np.ones((1, NUM_TOKENS), dtype=np.int64)
    totals = np.full(1, NUM_TOKENS, dtype=np.int64)
    since = np.zeros(1, dtype=np.int64)
    coded = np.zeros(1, dtype=np.int64)
    pos = 0
    for t in range(2 * (height - 1) + width):
        slot = t & (cm.RING - 1)
        i_start, i_end = cm._wave_rows(t, height, width)
        for i in range(i_start, i_end + 1):
            j = t - 2 * i
            pred8, fine, lean = cm._predict(t, i, j, width, xr, side, has_side, patch_mask, te, perr, sub, weights,
                                            blend.DEFAULT_WEIGHT_TABLE, 1, lut, nx, lo, cm.NO_LINEAR, None, None)
            pred = min(max((pred8 + 3) >> cm.EXTRA_BITS, lo), hi)
            e = x[i, j] - pred
            if lean > 0:
                e = -e
            u = 2 * e if e >= 0 else -2 * e - 1
            tok, nraw = token_of(u)
            out_ctx[pos] = fine
            out_tok[pos] = tok
            out_nraw[pos] = nraw
            out_col[pos] = j
            pos += 1
            cm._update(slot, i, j > 0, x[i, j], pred8, sub, num_pred, xr, te, perr, counts, totals, 0, tok, since,
                       coded, None, None, None)
            counts[0, tok] = 1
            totals[0] = NUM_TOKENS


@njit(cache=True)
def _dump_linear(x, xr, te, perr, out_taps, out_target, out_class, out_col):
    """Per pixel: the linear predictor's tap differences to W, x - W, its weight class, column."""
    height, width = x.shape
    sub = np.zeros(cm.NUM_PREDICTORS, dtype=np.int64)
    weights = np.zeros(cm.NUM_PREDICTORS, dtype=np.int64)
    side = np.zeros((1, 1), dtype=np.int64)
    counts = np.ones((1, NUM_TOKENS), dtype=np.int64)
    totals = np.full(1, NUM_TOKENS, dtype=np.int64)
    since = np.zeros(1, dtype=np.int64)
    coded = np.zeros(1, dtype=np.int64)
    lut = np.zeros(cm.NUM_BUCKETS, dtype=np.int64)
    pos = 0
    for t in range(2 * (height - 1) + width):
        slot = t & (cm.RING - 1)
        i_start, i_end = cm._wave_rows(t, height, width)
        for i in range(i_start, i_end + 1):
            j = t - 2 * i
            s1 = (t - 1) & (cm.RING - 1)
            s2 = (t - 2) & (cm.RING - 1)
            s3 = (t - 3) & (cm.RING - 1)
            has_w = j > 0
            has_n = i > 0
            has_ne = has_n and j + 1 < width
            w = xr[s1, i] if has_w else (xr[s2, i - 1] if has_n else 0)
            te_w = te[s1, i] if has_w else 0
            te_n = te[s2, i - 1] if has_n else 0
            te_nw = te[s3, i - 1] if (has_n and has_w) else te_n
            te_ne = te[s1, i - 1] if has_ne else te_n
            for k in range(cm.LIN_TAPS.shape[0]):
                out_taps[pos, k] = cm._tap(t, i, j, cm.LIN_TAPS[k, 0], cm.LIN_TAPS[k, 1], width, xr, w) - w
            out_target[pos] = x[i, j] - w
            out_class[pos] = cm._lin_class(abs(te_w) + abs(te_n) + abs(te_nw) + abs(te_ne))
            out_col[pos] = j
            pos += 1
            pred8, _, _ = cm._predict(t, i, j, width, xr, side, False, 7, te, perr, sub, weights,
                                      blend.DEFAULT_WEIGHT_TABLE, 1, lut, 1, 0, cm.NO_LINEAR, None, None)
            cm._update(slot, i, j > 0, x[i, j], pred8, sub, cm.PLAIN_PREDICTORS, xr, te, perr, counts, totals, 0, 0,
                       since, coded, None, None, None)
            counts[0, 0] = 1
            totals[0] = NUM_TOKENS


def linear_samples(plane: np.ndarray):
    """(taps, target, class, column) of every pixel of a plane, for fitting the linear predictor."""
    x = np.ascontiguousarray(plane, dtype=np.int64)
    st = cm.ModelState(*x.shape, None, 8)
    n = x.size
    out = (np.empty((n, len(cm.LIN_TAPS)), np.int32), np.empty(n, np.int32), np.empty(n, np.int8),
           np.empty(n, np.int32))
    _dump_linear(x, st.xr, st.te, st.perr, *out)
    return out


def fit_linear(samples, iterations: int = 6, max_per_class: int = 400_000) -> np.ndarray:
    """Integer weights (LIN_CLASSES, taps) in units of 2**-LIN_SHIFT minimising the summed
    absolute error (IRLS) per class: the code length of a Laplacian residual grows with it."""
    rng = np.random.default_rng(0)
    taps = np.concatenate([s[0] for s in samples]).astype(np.float64)
    target = np.concatenate([s[1] for s in samples]).astype(np.float64)
    cls = np.concatenate([s[2] for s in samples])
    out = np.zeros((cm.LIN_CLASSES, len(cm.LIN_TAPS)), dtype=np.int64)
    default = np.zeros(len(cm.LIN_TAPS))
    for c in range(cm.LIN_CLASSES):
        idx = np.flatnonzero(cls == c)
        if len(idx) > max_per_class:
            idx = rng.choice(idx, max_per_class, replace=False)
        if len(idx) < 200:
            coef = default
        else:
            a, y = taps[idx], target[idx]
            wts = np.ones(len(idx))
            for _ in range(iterations):
                sw = np.sqrt(wts)
                coef, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
                wts = 1.0 / np.maximum(np.abs(y - a @ coef), 0.5)
        out[c] = np.round(coef * (1 << cm.LIN_SHIFT))
    return out


def dump_plane(plane: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fine context, token, raw bits, column) of every pixel of a plane, in coding order."""
    x = np.ascontiguousarray(plane, dtype=np.int64)
    st = cm.ModelState(*x.shape, None, 8)
    n = x.size
    fine = cm.NUM_BUCKETS * cm.NUM_EXTRA
    out = (np.empty(n, np.int32), np.empty(n, np.uint8), np.empty(n, np.uint8), np.empty(n, np.int32))
    _dump(x, lo, hi, st.xr, st.side, st.has_side, st.patch_mask, st.te, st.perr,
          np.arange(fine, dtype=np.int64), cm.NUM_EXTRA, *out)
    return out


@njit(cache=True)
def adaptive_bits(buckets, tokens, counted, prior, increment, limit):
    """Code length (bits, tokens only) of the `counted` symbols under an adaptive histogram
    coder starting from `prior` (every symbol updates it)."""
    counts = prior.astype(np.float64).copy()
    totals = counts.sum(axis=1)
    bits = 0.0
    for k in range(buckets.size):
        b = buckets[k]
        t = tokens[k]
        if counted[k]:
            bits -= math.log2(counts[b, t] / totals[b])
        counts[b, t] += increment
        totals[b] += increment
        if totals[b] > limit:
            s = 0.0
            for q in range(counts.shape[1]):
                counts[b, q] = (counts[b, q] + 1) // 2
                s += counts[b, q]
            totals[b] = s
    return bits


@njit(cache=True)
def _xlogx_sum(c):
    n = 0.0
    s = 0.0
    for v in c:
        if v > 0:
            s += v * math.log2(v)
            n += v
    return s - (n * math.log2(n) if n > 0 else 0.0)  # = -(code length) of the counts


@njit(cache=True)
def _merge_cost(a, b):
    return _xlogx_sum(a) + _xlogx_sum(b) - _xlogx_sum(a + b)


@njit(cache=True)
def agglomerate(hist, num_clusters):
    """Greedy agglomerative merging of histograms (rows) into `num_clusters` groups, each step
    merging the pair that adds the fewest bits. Returns each row's group (0..num_clusters-1)."""
    m = hist.shape[0]
    h = hist.astype(np.float64).copy()
    alive = np.ones(m, dtype=np.bool_)
    parent = np.arange(m)
    cost = np.full((m, m), np.inf)
    for a in range(m):
        for b in range(a + 1, m):
            cost[a, b] = _merge_cost(h[a], h[b])
    n_alive = m
    while n_alive > num_clusters:
        best = np.inf
        ba = -1
        bb = -1
        for a in range(m):
            if not alive[a]:
                continue
            for b in range(a + 1, m):
                if alive[b] and cost[a, b] < best:
                    best = cost[a, b]
                    ba = a
                    bb = b
        h[ba] += h[bb]
        alive[bb] = False
        for k in range(m):
            if parent[k] == bb:
                parent[k] = ba
        for k in range(m):
            if alive[k] and k != ba:
                c = _merge_cost(h[ba], h[k])
                if k < ba:
                    cost[k, ba] = c
                else:
                    cost[ba, k] = c
        n_alive -= 1
    ids = np.full(m, -1)
    nxt = 0
    out = np.empty(m, dtype=np.int64)
    for k in range(m):
        r = parent[k]
        if ids[r] < 0:
            ids[r] = nxt
            nxt += 1
        out[k] = ids[r]
    return out


def histograms(dumps, num_fine: int, train: bool = True) -> np.ndarray:
    """Token counts per fine context over the training (or validation) columns."""
    hist = np.zeros((num_fine, NUM_TOKENS), dtype=np.int64)
    for (ctx, tok, _, col), val_col in dumps:
        keep = col < val_col if train else col >= val_col
        np.add.at(hist, (ctx[keep], tok[keep]), 1)
    return hist


def fit_tables(hist: np.ndarray, num_buckets: int, prior_weight: int, min_count: int = 0) -> ContextTables:
    """Trained context tables from fine-context token counts.

    Fine contexts seen fewer than `min_count` times are folded into their activity bucket's
    most frequent seen context before merging (too few samples to place them).
    """
    nx = cm.NUM_EXTRA
    num_fine = hist.shape[0]
    seen = hist.sum(axis=1)
    rep = np.arange(num_fine)
    for b in range(num_fine // nx):
        block = seen[b * nx : (b + 1) * nx]
        if block.max() == 0:
            continue
        top = b * nx + int(block.argmax())
        for k in range(b * nx, (b + 1) * nx):
            if seen[k] <= min_count:
                rep[k] = top
    roots = np.flatnonzero((rep == np.arange(num_fine)) & (seen > 0))
    merged = np.zeros((len(roots), NUM_TOKENS), dtype=np.int64)
    index = {int(r): k for k, r in enumerate(roots)}
    for k in range(num_fine):
        if seen[k] > 0 or rep[k] != k:
            merged[index[int(rep[k])]] += hist[k]
    groups = agglomerate(merged, min(num_buckets, len(roots)))
    lut = np.zeros(num_fine, dtype=np.int64)
    # unseen activity buckets: the group of the nearest seen activity bucket below or above
    for k in range(num_fine):
        r = int(rep[k])
        if r in index:
            lut[k] = groups[index[r]]
        else:
            lut[k] = -1
    for k in range(num_fine):
        if lut[k] < 0:
            b, e = divmod(k, nx)
            for d in range(1, num_fine):
                for cand in (k - d * nx, k + d * nx):
                    if 0 <= cand < num_fine and lut[cand] >= 0 and (cand % nx) == e:
                        lut[k] = lut[cand]
                        break
                if lut[k] >= 0:
                    break
            if lut[k] < 0:
                lut[k] = 0
    k_groups = int(groups.max()) + 1
    counts = np.zeros((k_groups, NUM_TOKENS), dtype=np.int64)
    for k in range(num_fine):
        counts[lut[k]] += hist[k]
    prior = np.maximum(1, np.floor(counts / np.maximum(1, counts.sum(axis=1, keepdims=True)) * prior_weight))
    return ContextTables(lut, nx, prior.astype(np.int64))


def lossless_planes(folder, modalities: tuple[str, ...]):
    """(corpus entry, plane, plane info) for every plane of the corpus's images of these
    modalities, as the lossless codec codes it (remapped, colour-transformed)."""
    from ..codec import pixels
    from ..codec.planes import coded_planes
    from .corpus import load_images

    for entry, arr in load_images(folder):
        if entry.modality not in modalities:
            continue
        layout = pixels.validate(arr, entry.bits_stored)
        planes = pixels.to_planes(arr, layout)
        coded, _, infos, _ = coded_planes(planes, planes, layout, "lossless", 0.2)
        for plane, info in zip(coded, infos):
            yield entry, plane, info


def corpus_dumps(folder, modalities: tuple[str, ...]) -> list:
    """Dumps of every coded plane (lossless, as the codec codes it) of the corpus's images."""
    return [(dump_plane(plane, info.lo, info.hi), entry.val_from_col, entry.modality)
            for entry, plane, info in lossless_planes(folder, modalities)]


def validation_bits(dumps, tables: ContextTables) -> dict[str, float]:
    """Adaptive code length (tokens + raw bits) of the validation columns, per modality."""
    out: dict[str, float] = {}
    for (ctx, tok, nraw, col), val_col, modality in dumps:
        counted = col >= val_col
        bits = adaptive_bits(tables.lut[ctx], tok, counted, tables.prior, cm.COUNT_INCREMENT, cm.COUNT_LIMIT)
        out[modality] = out.get(modality, 0.0) + bits + float(nraw[counted].sum())
    return out


def train(folder, modalities: tuple[str, ...] = ("ct", "mr", "xray"), num_buckets: int = 128,
          prior_weight: int = 2048, min_count: int = 20) -> tuple[dict[str, ContextTables], dict]:
    """Trained table sets and their validation figures against format 1's (percent per modality).

    Two sets share one trained linear predictor: "medical" (trained context quantisation and
    priors) and "activity" (format 1's activity buckets and prior); the encoder keeps the one
    that codes a trial crop of each image smaller.
    """
    dumps = corpus_dumps(folder, modalities)
    hist = histograms([(d, v) for d, v, _ in dumps], cm.NUM_BUCKETS * cm.NUM_EXTRA)
    trained = fit_tables(hist, num_buckets, prior_weight, min_count)
    lin = fit_linear(linear_training_samples(folder, modalities))
    v1 = ContextTables(np.repeat(cm.V1_LUT, cm.NUM_EXTRA), cm.NUM_EXTRA, cm._PRIOR)
    sets = {"medical": ContextTables(trained.lut, trained.nx, trained.prior, lin),
            "activity": ContextTables(v1.lut, v1.nx, v1.prior, lin)}
    before, after = validation_bits(dumps, v1), validation_bits(dumps, trained)
    report = {m: {"format1_bytes": before[m] / 8, "trained_context_bytes": after[m] / 8,
                  "change_percent": 100 * (after[m] / before[m] - 1)} for m in before}
    return sets, report


def linear_training_samples(folder, modalities: tuple[str, ...]) -> list:
    out = []
    for entry, plane, _ in lossless_planes(folder, modalities):
        taps, target, cls, col = linear_samples(plane)
        keep = col < entry.val_from_col
        out.append((taps[keep], target[keep], cls[keep]))
    return out


def main() -> None:
    import argparse
    import json
    import time

    from ..weights.coder_tables import save_tables

    parser = argparse.ArgumentParser(description="train the residual coder's context tables (format 2)")
    parser.add_argument("--corpus", required=True, help="folder written by jobs/build_corpus.py")
    parser.add_argument("--out", required=True, help="folder for the tables files")
    parser.add_argument("--modalities", default="ct,mr,xray")
    parser.add_argument("--buckets", type=int, default=128)
    parser.add_argument("--prior-weight", type=int, default=2048)
    args = parser.parse_args()
    start = time.perf_counter()
    sets, report = train(args.corpus, tuple(args.modalities.split(",")), args.buckets, args.prior_weight)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    digests = {name: save_tables(out / f"{name}.safetensors", tables,
                                 {"training": {"modalities": args.modalities, "validation": report}})
               for name, tables in sets.items()}
    print(json.dumps({"sha256": digests, "seconds": round(time.perf_counter() - start, 1), "validation": report},
                     indent=1))


if __name__ == "__main__":
    main()
