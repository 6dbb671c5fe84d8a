"""Lossless and near-lossless decoding never depend on thread count, batch size or float maths."""

import numpy as np
import pytest
import torch

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec.refine import Refiner

from .conftest import smooth_image


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return [smooth_image(rng, (70 + 9 * k, 90 - 5 * k), 12) for k in range(4)]


def _encode_all(codec, images, mode, **kw):
    return [codec.encode(a, 12, mode=mode, **kw).to_bytes() for a in images]


@pytest.mark.parametrize("mode, kw", [("lossless", {}), ("near-lossless", {"max_error": 2}), ("lossy", {})])
def test_same_bytes_and_pixels_for_one_or_two_threads(codec, images, mode, kw):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        blobs_1 = _encode_all(codec, images, mode, **kw)
        out_1 = [codec.decode(EncodedImage.from_bytes(b)) for b in blobs_1]
        torch.set_num_threads(2)
        blobs_2 = _encode_all(codec, images, mode, **kw)
        out_2 = [codec.decode(EncodedImage.from_bytes(b)) for b in blobs_1]
    finally:
        torch.set_num_threads(before)
    assert blobs_1 == blobs_2
    for a, b in zip(out_1, out_2):
        assert np.array_equal(a, b)


def test_batch_size_does_not_change_results(codec, images):
    """decode_many with batch sizes 1, 3 and all equals one-at-a-time decoding."""
    blobs = _encode_all(codec, images, "lossless") + _encode_all(codec, images, "near-lossless", max_error=3)
    encs = [EncodedImage.from_bytes(b) for b in blobs]
    single = [codec.decode(e) for e in encs]
    for batch_size in (1, 3, len(encs)):
        batched = codec.decode_many(encs, batch_size=batch_size)
        assert all(np.array_equal(a, b) for a, b in zip(single, batched))
    previews = [codec.decode(e, preview=True) for e in encs]
    for batch_size in (1, 3):
        batched = codec.decode_many(encs, preview=True, batch_size=batch_size)
        assert all(np.array_equal(a, b) for a, b in zip(previews, batched))


def test_lossless_is_independent_of_the_learned_refiner(images, tmp_path):
    """Lossless decode never runs float layers: a randomly trained refiner changes previews only."""
    base = Codec.load()
    torch.manual_seed(0)
    noisy = Refiner(base.model.core.channels)
    for p in noisy.parameters():
        torch.nn.init.normal_(p, std=0.05)
    from lowrank_batch.weights.model_file import LowRankModel

    other = Codec(LowRankModel(base.model.core, noisy, base.model.sha256, base.model.metadata))
    for a in images:
        enc = base.encode(a, 12)
        assert np.array_equal(other.decode(enc), a)
        assert not np.array_equal(other.decode(enc, preview=True), base.decode(enc, preview=True))
