"""Token alphabet of the residual coder (as JPEG XL's hybrid integers).

A zig-zag value u >= 0 below DIRECT_TOKENS is its own token; above, the token holds the
exponent and the two bits after the leading one, and the remaining low bits are sent raw
(they are close to uniform).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

DIRECT_TOKENS = 16
MAX_SPAN = 1 << 24  # hi - lo of a coded plane; zig-zag values stay below 2**26
NUM_TOKENS = DIRECT_TOKENS + 22 * 4  # exponents 4..25


@intrinsic
def _leading_zeros(typingctx, x):
    """LLVM's ctlz: one instruction (lzcnt, or bsr) in place of a chain of data-dependent branches."""
    if not isinstance(x, types.Integer):
        raise TypingError(f"_leading_zeros takes an integer, got {x}")

    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return x(x), codegen


@njit(cache=True, inline="always")
def floor_log2(x):
    """floor(log2(x)) for 1 <= x < 2**32; 0 below 2 and 31 from 2**32 up. Formats 1-6 were
    written with a five-step branch search (16, 8, 4, 2, 1) that gives exactly these values
    outside its range too (a blend's total weight can pass 2**32 in flat regions), so they
    are part of the format. Branch-free: one core, the 512^2 CT decodes in 18.1 instead of
    20.4 ms, RG1 in 285 instead of 321 ms (same bytes)."""
    n = 63 - _leading_zeros(np.int64(x))
    return 0 if x < 2 else min(n, 31)


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
