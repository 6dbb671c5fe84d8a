"""Token alphabet of the residual coder (as JPEG XL's hybrid integers).

A zig-zag value u >= 0 below DIRECT_TOKENS is its own token; above, the token holds the
exponent and the two bits after the leading one, and the remaining low bits are sent raw
(they are close to uniform).
"""

from __future__ import annotations

from numba import njit

DIRECT_TOKENS = 16
MAX_SPAN = 1 << 24  # hi - lo of a coded plane; zig-zag values stay below 2**26
NUM_TOKENS = DIRECT_TOKENS + 22 * 4  # exponents 4..25


@njit(cache=True, inline="always")
def floor_log2(x):
    """floor(log2(x)) for 1 <= x < 2**32, in five branch steps."""
    n = 0
    if x >= 1 << 16:
        x >>= 16
        n += 16
    if x >= 1 << 8:
        x >>= 8
        n += 8
    if x >= 1 << 4:
        x >>= 4
        n += 4
    if x >= 1 << 2:
        x >>= 2
        n += 2
    if x >= 1 << 1:
        n += 1
    return n


@njit(cache=True, inline="always")
def token_of(u):
    """Token and raw-bit count of a zig-zag value u >= 0."""
    if u < DIRECT_TOKENS:
        return u, 0
    n = floor_log2(u)
    return DIRECT_TOKENS + (n - 4) * 4 + ((u >> (n - 2)) & 3), n - 2


@njit(cache=True, inline="always")
def token_base(token):
    """Smallest zig-zag value of a token and the number of raw bits that follow it."""
    if token < DIRECT_TOKENS:
        return token, 0
    n = (token - DIRECT_TOKENS) // 4 + 4
    m = (token - DIRECT_TOKENS) & 3
    return (4 + m) << (n - 2), n - 2
