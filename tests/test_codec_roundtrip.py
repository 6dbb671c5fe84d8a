"""Codec round trips: property tests over shapes, channels, bit depths and modes; real images."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_batch import EncodedImage
from lowrank_batch.codec import metrics

from .conftest import smooth_image


@st.composite
def images(draw):
    bits = draw(st.integers(8, 16))
    h = draw(st.integers(2, 40))
    w = draw(st.integers(2, 40))
    channels = draw(st.sampled_from([None, 1, 3]))
    signed = draw(st.booleans())
    kind = draw(st.sampled_from(["smooth", "noise", "constant", "extremes", "sparse", "padded"]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    if kind == "smooth":
        return smooth_image(rng, shape, bits, signed), bits
    if kind in ("sparse", "padded"):  # histograms the coder remaps: every k-th value, or CT-like padding
        a = smooth_image(rng, shape, bits, signed).astype(np.int64)
        floor = -(1 << (bits - 1)) if signed else 0
        if kind == "sparse":
            k = draw(st.integers(2, 9))
            a = floor + (a - floor) // k * k
        else:
            a = floor + (a - floor) // 4 + ((1 << bits) - 1) // 2  # a dense band in the upper half
            a[rng.random(a.shape) < 0.3] = floor  # and padding far below it
        return a.astype(smooth_image(rng, (1, 1), bits, signed).dtype), bits
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if kind == "noise":
        a = rng.integers(lo, hi + 1, shape)
    elif kind == "constant":
        a = np.full(shape, rng.integers(lo, hi + 1))
    else:
        a = rng.choice([lo, hi], size=shape)
    dtype = (np.int16 if bits > 8 else np.int8) if signed else (np.uint16 if bits > 8 else np.uint8)
    return a.astype(dtype), bits


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(images())
def test_lossless_is_bit_exact(codec, image):
    array, bits = image
    enc = codec.encode(array, bits, mode="lossless")
    out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert out.dtype == array.dtype and out.shape == array.shape
    assert np.array_equal(out, array)


@SETTINGS
@given(images(), st.sampled_from([1, 2, 4, 9]))
def test_near_lossless_bound_holds_on_every_pixel(codec, image, delta):
    array, bits = image
    enc = codec.encode(array, bits, mode="near-lossless", max_error=delta)
    out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert out.dtype == array.dtype and out.shape == array.shape
    assert metrics.max_abs_error(array, out) <= delta
    assert math.isclose(enc.psnr, metrics.psnr(array, out, bits), rel_tol=1e-9) or enc.psnr == math.inf


@SETTINGS
@given(images(), st.floats(20, 70))
def test_lossy_and_preview_decode_and_record_psnr(codec, image, quality):
    array, bits = image
    enc = codec.encode(array, bits, mode="lossy", quality=quality)
    assert enc.residual_streams == []
    out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert out.dtype == array.dtype and out.shape == array.shape
    assert enc.psnr == pytest.approx(metrics.psnr(array, out, bits)) or enc.psnr == math.inf
    preview = codec.decode(enc, preview=True)
    assert np.array_equal(preview, out)


def test_preview_of_lossless_uses_latents_only(codec, rng):
    array = smooth_image(rng, (64, 64), 12)
    enc = codec.encode(array, 12)
    preview = codec.decode(enc, preview=True)
    assert preview.shape == array.shape and preview.dtype == array.dtype
    # format 4 guides this image's plane no longer (guidance saves < 1% of it), so its preview
    # is cut to CodecConfig.preview_budget of the file: a coarse thumbnail at 64^2 (~24 dB)
    assert not any(p.guided for p in enc.planes)
    assert 20 < metrics.psnr(array, preview, 12) < math.inf
    # archival modes record the linear preview's PSNR (no refiner run at encode)
    from lowrank_batch import Codec
    from lowrank_batch.weights.model_file import LowRankModel

    linear = Codec(LowRankModel(codec.model.core, codec.model.refiner.untrained_like(), codec.model.sha256, {}))
    assert metrics.psnr(array, linear.decode(enc, preview=True), 12) == pytest.approx(enc.preview_psnr)


def test_higher_quality_costs_more_and_looks_better(codec, rng):
    array = smooth_image(rng, (96, 96), 12)
    low = codec.encode(array, 12, mode="lossy", quality=35)
    high = codec.encode(array, 12, mode="lossy", quality=55)
    assert high.encoded_bytes > low.encoded_bytes
    assert high.psnr > low.psnr


def test_signed_ct_with_offset_round_trips(codec, rng):
    hu = rng.integers(-1024, 3072, (50, 61)).astype(np.int16)
    enc = codec.encode(hu, 13)  # HU -1024..3071 needs 13 signed bits
    assert enc.layout.offset == 4096
    assert np.array_equal(codec.decode(enc), hu)


def test_large_odd_sized_image_has_no_seams(codec, rng):
    array = smooth_image(rng, (517, 389), 16)
    for mode, kw in [("lossless", {}), ("near-lossless", {"max_error": 3})]:
        enc = codec.encode(array, 16, mode=mode, **kw)
        out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
        assert metrics.max_abs_error(array, out) <= kw.get("max_error", 0)


def test_real_images_from_the_dev_corpus(codec):
    from lowrank_batch.devcorpus import dev_images

    images = dev_images(("ct", "mr", "cr", "natural"))
    assert {im.modality for im in images} == {"ct", "mr", "cr", "natural"}
    for im in images[::3]:
        array = im.pixels[:200, :200]
        enc = codec.encode(array, im.bits_stored)
        assert np.array_equal(codec.decode(EncodedImage.from_bytes(enc.to_bytes())), array), im.name
        raw = array.size * ((im.bits_stored + 7) // 8)
        assert enc.encoded_bytes < raw, f"{im.name}: lossless made it bigger"
        near = codec.encode(array, im.bits_stored, mode="near-lossless", max_error=2)
        assert metrics.max_abs_error(array, codec.decode(near)) <= 2
        assert near.encoded_bytes < enc.encoded_bytes


def test_a_codec_on_another_device_leaves_the_shared_model_alone(codec):
    """Models are cached per process; building a codec for another device (CUDA in production,
    torch's 'meta' device here) must not move the refiner of every codec sharing the model."""
    from lowrank_batch import Codec

    other = Codec(codec.model, device="meta")
    assert next(codec.model.refiner.parameters()).device.type == "cpu"
    assert next(other.model.refiner.parameters()).device.type == "meta"
    a = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096
    assert np.array_equal(codec.decode(codec.encode(a, 12), preview=False), a)
