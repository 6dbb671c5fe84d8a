"""Compile the codec's kernels into numba's on-disk cache ahead of the first real request.

The residual coder and the context model are numba functions compiled on first call (a first
512² decode in a fresh environment took ~30 s on 2 cores: each model variant - bias
cancellation and the linear predictor on or off - compiles separately; then ~30-55 ms). Their cache (`cache=True`) lives
beside the package (or in $NUMBA_CACHE_DIR), so compiling them once at install time - or in
`make demo` - makes decode-on-demand fast from the first request, in every later process and
Ray worker on the machine.
"""

from __future__ import annotations

import time

import numpy as np

# (shape, dtype, bits stored): grey 8 and 16-bit, and colour, so every kernel signature the
# archive's images reach is compiled
SAMPLES = (((64, 64), np.uint16, 12), ((64, 64), np.uint8, 8), ((64, 64, 3), np.uint8, 8))
MODES = (("lossless", None), ("near-lossless", 2), ("lossy", None))
# the default, and format 2 (trained tables: other kernel signatures); 1 and 3 share most of 4's, and
# their encoders are only for writing old versions on request
FORMATS = (4, 2)


def sample_image(shape, dtype, bits: int) -> np.ndarray:
    """A smooth image with edges and noise: takes the guided and unguided coding paths."""
    rng = np.random.default_rng(0)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    field = 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + 0.15 * (xx > w // 2)
    maxval = (1 << bits) - 1
    img = field * maxval + rng.normal(0, maxval * 0.01, (h, w))
    if len(shape) == 3:
        img = np.stack([img * (0.8 + 0.1 * c) for c in range(shape[2])], axis=2)
    return np.clip(np.rint(img), 0, maxval).astype(dtype)


def warm_up(model: str | None = None, log=print) -> float:
    """Encode and decode small samples in every mode with the model (default: the shipped one,
    installed into the weight store if it is not yet); returns the seconds it took."""
    from .codec.codec import CodecConfig
    from .weights.loading import load_codec

    start = time.perf_counter()
    # format 4 tries intensity bands on large planes only: here on the samples too, so that their
    # kernels are compiled as well
    codec = load_codec(model, config=CodecConfig(band_min_pixels=0))
    for shape, dtype, bits in SAMPLES:
        image = sample_image(shape, dtype, bits)
        for mode, max_error in MODES:
            for version in FORMATS:
                enc = codec.encode(image, bits, mode, max_error, format_version=version)
                codec.decode(enc)
                codec.decode(enc, preview=True)
    seconds = time.perf_counter() - start
    log(f"codec kernels compiled and cached in {seconds:.1f} s")
    return seconds
