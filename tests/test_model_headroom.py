"""benchmarks.model_headroom observes the encoder's real model passes: the ideal bits it counts
for the coder's own model match the residual streams the encoder writes."""

import numpy as np

from benchmarks.model_headroom import image_bits, observed_passes
from lowrank_batch import Codec
from lowrank_batch.devcorpus import CorpusImage


def _image() -> CorpusImage:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:96, :112]
    pixels = (800 + 300 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 6, x.shape)).astype(np.uint16)
    return CorpusImage("synthetic", "ct", pixels, 12, "test")


def test_observed_passes_count_what_the_encoder_writes():
    codec = Codec.load()
    image = _image()
    passes = observed_passes(codec, image)
    assert passes and sum(mp.tokens.size for _, mp in passes) == image.pixels.size
    bits = image_bits(codec, image)
    residual = sum(len(s) for s in codec.encode(image.pixels, image.bits_stored).residual_streams)
    # ideal code length vs the range coder's bytes: within its few bytes of overhead per strip
    assert abs(bits["snapshots"] / 8 - residual) <= 0.01 * residual + 16 * len(passes)
    assert all(v > 0 for v in bits.values())
    # the observer leaves the codec as it was
    from lowrank_batch.codec import codec as codec_module, plane_v4
    assert codec_module.encode_plane_v4 is plane_v4.encode_plane_v4
