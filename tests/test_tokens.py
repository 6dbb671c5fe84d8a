"""The token alphabet's integer helpers: their values are part of every released format."""

import numpy as np
from numba import njit

from lowrank_batch.codec.tokens import DIRECT_TOKENS, floor_log2, token_base, token_of


def _branch_search_log2(x: int) -> int:
    """floor_log2 as formats 1-6 were written: a five-step branch search, which gives 0 below
    2 and 31 from 2**32 up (a blend's total weight passes 2**32 in flat regions)."""
    n = 0
    for step in (16, 8, 4, 2, 1):
        if x >= 1 << step:
            x >>= step
            n += step
    return n


@njit
def _many_log2(xs):
    out = np.empty_like(xs)
    for k in range(xs.size):
        out[k] = floor_log2(xs[k])
    return out


def test_floor_log2_keeps_the_released_values(rng):
    edges = [(1 << k) + d for k in range(63) for d in (-1, 0, 1)]
    xs = np.concatenate([np.arange(-300, 70_000), np.array(edges), rng.integers(-(1 << 62), 1 << 62, 20_000),
                         rng.integers(1, 1 << 40, 20_000)]).astype(np.int64)
    expected = np.array([_branch_search_log2(int(x)) for x in xs])
    assert np.array_equal(_many_log2(xs), expected)
    assert _many_log2(np.array([1 << 33, 1 << 40, -5], dtype=np.int64)).tolist() == [31, 31, 0]


@njit
def _round_trip(us):
    out = np.empty_like(us)
    for k in range(us.size):
        tok, nraw = token_of(us[k])
        base, nraw2 = token_base(tok)
        out[k] = -1 if nraw != nraw2 or us[k] - base >= (1 << nraw) or us[k] < base else tok
    return out


def test_tokens_cover_every_value_once():
    us = np.concatenate([np.arange(0, 1 << 16), (1 << np.arange(16, 26)) - 1]).astype(np.int64)
    tokens = _round_trip(us)
    assert (tokens >= 0).all()
    assert np.array_equal(tokens[:DIRECT_TOKENS], np.arange(DIRECT_TOKENS))
    assert (np.diff(tokens[: 1 << 16]) >= 0).all()  # tokens grow with the value
