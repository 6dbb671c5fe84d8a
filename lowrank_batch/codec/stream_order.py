"""The order in which tokens reach a shared range-coder stream (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .context_model import _wave_rows


@njit(cache=True)
def order_for_single_stream(buckets, tokens, snaps, height, width, num_buckets):
    """Reorder coding-order symbols to (wavefront, bucket, row): the order in which the decoder
    fetches them when every bucket shares one stream (a counting sort per wavefront).
    Returns tokens, snapshot ids and the number of (wavefront, bucket) runs."""
    out_tokens = np.empty_like(tokens)
    out_snaps = np.empty_like(snaps)
    sizes = np.zeros(num_buckets, dtype=np.int64)
    offsets = np.zeros(num_buckets, dtype=np.int64)
    start = 0
    runs = 0
    for t in range(2 * (height - 1) + width):
        i_start, i_end = _wave_rows(t, height, width)
        n = i_end - i_start + 1
        for k in range(start, start + n):
            sizes[buckets[k]] += 1
        offset = start
        for k in range(start, start + n):  # visit only the buckets present, in bucket order
            b = buckets[k]
            if sizes[b] > 0 and offsets[b] == 0:
                offsets[b] = -1  # mark present
        for b in range(num_buckets):
            if offsets[b] == -1:
                offsets[b] = offset
                offset += sizes[b]
                runs += 1
        for k in range(start, start + n):
            b = buckets[k]
            out_tokens[offsets[b]] = tokens[k]
            out_snaps[offsets[b]] = snaps[k]
            offsets[b] += 1
        for k in range(start, start + n):
            sizes[buckets[k]] = 0
            offsets[buckets[k]] = 0
        start += n
    return out_tokens, out_snaps, runs


@njit(cache=True, nogil=True)
def count_runs(buckets, height, width, num_buckets):
    """Number of (wavefront, bucket) runs: the coder calls a shared stream would need."""
    seen = np.full(num_buckets, -1, dtype=np.int64)
    start = 0
    runs = 0
    for t in range(2 * (height - 1) + width):
        i_start, i_end = _wave_rows(t, height, width)
        for k in range(start, start + i_end - i_start + 1):
            if seen[buckets[k]] != t:
                seen[buckets[k]] = t
                runs += 1
        start += i_end - i_start + 1
    return runs
