"""How the codec's hot numba loops are compiled.

`refcount_free` compiles a kernel without numba's reference counting (NRT). In an ordinary
@njit function every array handed to an inlined helper (_predict, _update, decode_symbol, ...)
costs an atomic NRT_incref / NRT_decref per call, and LLVM's refcount pruning cannot remove
them across a per-pixel loop's branches: perf put 82% of a 512x512 CT plane's decode in those
two functions (73 -> 22 ms once removed; the encoder's model pass halved too). Such a kernel
may neither allocate nor slice (no new arrays, no views): an ordinary @njit wrapper allocates
its scratch arrays and passes them in. The arithmetic, and so every coded bit, is unchanged.
"""

from __future__ import annotations

from numba import njit

refcount_free = njit(cache=True, nogil=True, _nrt=False)
