"""Where the lossless coder's bits could still come from, on its own contexts (dev corpus only).

    python -m benchmarks.model_headroom [--modalities ct,mr,cr]

Encodes each dev image with the default format and observes every plane's final model pass
(the tokens in coding order, their buckets and the histogram snapshots the coder uses). Then
it recounts the same tokens under other probability models, all as ideal code lengths
(-log2 p), the raw low bits added alike:

- `snapshots`: the coder's own model (histograms refreshed at wavefront starts), what it codes;
- `immediate`: the same histograms updated after every token (what the wavefront-parallel
  refresh costs);
- `mixed`: `immediate` linearly mixed with a second adaptive histogram chosen by the W, N and NE
  neighbours' tokens (8 classes each), with a mixing weight per bucket picked from
  {0, .2, .4, .6, .8} by its recent cost: the headroom a second context of that kind offers;
- `static`: each bucket's empirical token entropy over the whole plane, a two-pass bound
  that ignores the cost of sending the histograms: what any adaptation of these buckets
  could approach at best.

Small differences between `mixed` / `static` and `snapshots` mean the bits are in the
prediction and the context information, not in how the histograms are estimated.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from lowrank_batch import Codec  # noqa: E402
from lowrank_batch.codec import codec as codec_module  # noqa: E402
from lowrank_batch.codec import context_model as cm  # noqa: E402
from lowrank_batch.codec import plane_v4, residual_coder  # noqa: E402
from lowrank_batch.devcorpus import dev_images  # noqa: E402

MIX_WEIGHTS = np.array([0.0, 0.2, 0.4, 0.6, 0.8])
MIX_DECAY = 0.995  # of each bucket's running cost per mixing weight
NEIGHBOUR_CONTEXTS = 8 * 8 * 8


@njit(cache=True)
def _coding_order(height, width):
    """(row, column) of each pixel in wavefront order, as context_model visits them."""
    out = np.empty((height * width, 2), np.int64)
    k = 0
    for t in range(2 * (height - 1) + width):
        for i in range(0 if t < width else (t - width) // 2 + 1, min(height - 1, t // 2) + 1):
            out[k, 0] = i
            out[k, 1] = t - 2 * i
            k += 1
    return out


@njit(cache=True)
def _token_class(token):
    """8 classes of a neighbour's token (its residual's size, about an octave each)."""
    for c, top in enumerate((0, 2, 4, 8, 15, 23, 31)):
        if token <= top:
            return c
    return 7


@njit(cache=True)
def _learn(counts, totals, row, token, increment):
    counts[row, token] += increment
    totals[row] += increment
    if totals[row] > cm.COUNT_LIMIT:
        totals[row] = 0.0
        for k in range(counts.shape[1]):
            counts[row, k] = np.floor((counts[row, k] + 1) / 2)
            totals[row] += counts[row, k]


@njit(cache=True)
def _alternative_bits(tokens, buckets, order, height, width, prior):
    """Ideal bits of the tokens under `immediate`, `mixed` and `static` (module docstring)."""
    grid = np.zeros((height, width), np.int64)
    counts = prior.astype(np.float64).copy()
    totals = counts.sum(axis=1)
    second = np.full((NEIGHBOUR_CONTEXTS, counts.shape[1]), 0.5)
    second_totals = second.sum(axis=1)
    weight_cost = np.zeros((counts.shape[0], MIX_WEIGHTS.size))
    seen = np.zeros(counts.shape)
    immediate = mixed = 0.0
    for k in range(tokens.size):
        i, j, token, b = order[k, 0], order[k, 1], tokens[k], buckets[k]
        t_w = grid[i, j - 1] if j > 0 else (grid[i - 1, j] if i > 0 else 0)
        t_n = grid[i - 1, j] if i > 0 else t_w
        t_ne = grid[i - 1, j + 1] if i > 0 and j + 1 < width else t_n
        ctx = (_token_class(t_w) * 8 + _token_class(t_n)) * 8 + _token_class(t_ne)
        p_a = counts[b, token] / totals[b]
        p_b = second[ctx, token] / second_totals[ctx]
        best = np.argmin(weight_cost[b])
        mixed -= np.log2((1 - MIX_WEIGHTS[best]) * p_a + MIX_WEIGHTS[best] * p_b)
        for m in range(MIX_WEIGHTS.size):
            weight_cost[b, m] = weight_cost[b, m] * MIX_DECAY - np.log2((1 - MIX_WEIGHTS[m]) * p_a
                                                                        + MIX_WEIGHTS[m] * p_b)
        immediate -= np.log2(p_a)
        grid[i, j] = token
        seen[b, token] += 1
        _learn(counts, totals, b, token, cm.COUNT_INCREMENT)
        _learn(second, second_totals, ctx, token, cm.COUNT_INCREMENT)
    static = 0.0
    for b in range(seen.shape[0]):
        n = seen[b].sum()
        for token in range(seen.shape[1]):
            if seen[b, token] > 0:
                static -= seen[b, token] * np.log2(seen[b, token] / n)
    return immediate, mixed, static


def observed_passes(codec: Codec, image) -> list:
    """(tables, model pass) of every strip the default encoder codes for `image`, observed by
    wrapping format 4+'s plane encoder and stream writer (nothing else changes)."""
    seen = []
    encode_plane, write_stream = plane_v4.encode_plane_v4, plane_v4.in_order_stream

    def observing_encode(plane, lo, hi, delta, side, patch, tables, *args, **kwargs):
        first = len(seen)
        stream, values, thresholds = encode_plane(plane, lo, hi, delta, side, patch, tables, *args, **kwargs)
        if thresholds is not None:  # the bands it chose split every bucket
            tables = residual_coder.with_value_classes(tables, thresholds)
        seen[first:] = [(tables, mp) for mp in seen[first:]]
        return stream, values, thresholds

    def observing_stream(mp):
        seen.append(mp)
        return write_stream(mp)

    codec_module.encode_plane_v4, plane_v4.in_order_stream = observing_encode, observing_stream
    try:
        codec.encode(image.pixels, image.bits_stored)
    finally:
        codec_module.encode_plane_v4, plane_v4.in_order_stream = encode_plane, write_stream
    return seen


def image_bits(codec: Codec, image) -> dict[str, float]:
    totals = dict.fromkeys(("snapshots", "immediate", "mixed", "static"), 0.0)
    for tables, mp in observed_passes(codec, image):
        prior = tables.prior
        immediate, mixed, static = _alternative_bits(mp.tokens.astype(np.int64), mp.buckets.astype(np.int64),
                                                     _coding_order(*mp.shape), *mp.shape, prior)
        raw = mp.num_bits
        totals["snapshots"] += plane_v4.model_bits(mp) / 65536 + raw
        totals["immediate"] += immediate + raw
        totals["mixed"] += mixed + raw
        totals["static"] += static + raw
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", default="ct,mr,cr")
    args = parser.parse_args()
    codec = Codec.load()
    by_modality: dict[str, dict[str, float]] = {}
    for image in dev_images(tuple(args.modalities.split(","))):
        bits = image_bits(codec, image)
        row = by_modality.setdefault(image.modality, dict.fromkeys(bits, 0.0))
        for key, value in bits.items():
            row[key] += value
        print(f"{image.name:36s}" + "".join(f" {k} {100 * (v / bits['snapshots'] - 1):+6.2f}%"
                                             for k, v in bits.items() if k != "snapshots"))
    summary = {m: {"snapshot_bytes": round(row["snapshots"] / 8),
                   **{f"{k}_vs_snapshots_pct": round(100 * (v / row["snapshots"] - 1), 2)
                      for k, v in row.items() if k != "snapshots"}}
               for m, row in by_modality.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
