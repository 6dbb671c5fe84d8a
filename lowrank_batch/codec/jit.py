"""How the codec's hot numba loops are compiled.

`refcount_free` compiles a kernel without numba's reference counting (NRT). In an ordinary
@njit function every array handed to an inlined helper (_predict, _update, decode_symbol, ...)
costs an atomic NRT_incref / NRT_decref per call, and LLVM's refcount pruning cannot remove
them across a per-pixel loop's branches: perf put 82% of a 512x512 CT plane's decode in those
two functions (73 -> 22 ms once removed; the encoder's model pass halved too).

The rules for such a kernel: it cannot allocate (numba refuses to compile np.empty and the
like), so an ordinary @njit wrapper allocates its scratch arrays and passes them in; and it
must never return or store an array or a view (an ordinary caller would release a reference
it was never given). Ours return integers only. The arithmetic, and so every coded bit, is
unchanged.

numba's cache key is a function's bytecode and its file's timestamp, not these flags nor the
inlined helpers of other files: after editing this file or an inlined helper, delete the
__pycache__/*.nbi and *.nbc files so that the kernels recompile.
"""

from __future__ import annotations

from numba import njit

refcount_free = njit(cache=True, nogil=True, _nrt=False)
