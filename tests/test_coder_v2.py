"""Format 2 (trained context tables) and the fast preview path."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec import metrics, pixels
from lowrank_batch.codec.residual_coder import decode_plane, encode_plane
from lowrank_batch.errors import WeightsError
from lowrank_batch.weights import coder_tables

from .conftest import smooth_image


@st.composite
def images(draw):
    bits = draw(st.integers(8, 16))
    h, w = draw(st.integers(2, 36)), draw(st.integers(2, 36))
    channels = draw(st.sampled_from([None, 3]))
    signed = draw(st.booleans())
    kind = draw(st.sampled_from(["smooth", "sparse", "noise"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    shape = (h, w) if channels is None else (h, w, channels)
    a = smooth_image(rng, shape, bits, signed).astype(np.int64)
    if kind == "sparse":  # few distinct values spread over the range: coded as indices
        step = max(1, (1 << bits) // 64)
        a = a // step * step
    elif kind == "noise":
        a = a + rng.integers(-40, 41, a.shape)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = (np.int16 if bits > 8 else np.int8) if signed else (np.uint16 if bits > 8 else np.uint8)
    return np.clip(a, lo, hi).astype(dtype), bits


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images(), st.sampled_from([("lossless", None), ("near-lossless", 1), ("near-lossless", 2),
                                  ("near-lossless", 4), ("lossy", None)]))
def test_format2_round_trips(codec, image, mode):
    array, bits = image
    mode, delta = mode
    enc = codec.encode(array, bits, mode=mode, max_error=delta, format_version=2)
    blob = enc.to_bytes()
    assert blob[4] == 2
    back = EncodedImage.from_bytes(blob)
    assert back.tables_sha256 in coder_tables.candidate_tables()
    out = codec.decode(back)
    assert out.dtype == array.dtype and out.shape == array.shape
    if mode == "lossless":
        assert np.array_equal(out, array)
    elif mode == "near-lossless":
        assert metrics.max_abs_error(array, out) <= delta
    else:
        assert pixels.pixel_sha256(codec._decode_latents(back)) == enc.decoded_sha256


def test_format2_same_bytes_for_any_thread_count(codec, rng):
    array = smooth_image(rng, (70, 90), 12)
    before = torch.get_num_threads()
    try:
        blobs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            blobs.append(codec.encode(array, 12, format_version=2).to_bytes())
    finally:
        torch.set_num_threads(before)
    assert blobs[0] == blobs[1]


def test_missing_tables_fail_naming_their_digest(codec, rng):
    enc = codec.encode(smooth_image(rng, (20, 24), 12), 12, format_version=2)
    enc.tables_sha256 = "ab" * 32
    blob = EncodedImage.from_bytes(enc.to_bytes())
    with pytest.raises(WeightsError, match="ab" * 32):
        codec.decode(blob)


def test_tables_plane_round_trip_and_bound(rng):
    tables = coder_tables.tables_by_digest(coder_tables.SHIPPED_TABLES_SHA256["medical"])
    plane = rng.integers(0, 4096, (33, 47))
    blob, _ = encode_plane(plane, 0, 4095, tables=tables)
    assert np.array_equal(decode_plane(blob, 33, 47, 0, 4095, tables=tables), plane)
    blob, recon = encode_plane(plane, 0, 4095, 3, tables=tables)
    assert np.array_equal(decode_plane(blob, 33, 47, 0, 4095, 3, tables=tables), recon)
    assert np.abs(recon - plane).max() <= 3


def _tables_digest_in_subprocess() -> str:
    code = ("import hashlib; from lowrank_batch.weights import coder_tables as c;"
            "t = c.tables_by_digest(c.SHIPPED_TABLES_SHA256['medical']);"
            "print(hashlib.sha256(t.lut.tobytes() + t.prior.tobytes() + t.lin.tobytes()).hexdigest())")
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_integer_tables_identical_across_processes():
    t = coder_tables.tables_by_digest(coder_tables.SHIPPED_TABLES_SHA256["medical"])
    here = hashlib.sha256(t.lut.tobytes() + t.prior.tobytes() + t.lin.tobytes()).hexdigest()
    assert _tables_digest_in_subprocess() == here
    assert t.lut.dtype == np.int64 and t.prior.dtype == np.int64 and t.lin.dtype == np.int64


def test_shipped_tables_are_pinned():
    assert set(coder_tables.shipped_tables()) == set(coder_tables.SHIPPED_TABLES_SHA256.values())


def test_damaged_tables_file_lists_every_problem(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"lut": torch.full((10,), -1, dtype=torch.int32)}, str(path), metadata={"architecture": "x"})
    with pytest.raises(WeightsError) as err:
        coder_tables.load_tables(path)
    text = str(err.value)
    assert "architecture" in text and "tensors" in text and "nx" in text


def test_thumbnail_preview_from_latents(codec, rng):
    array = smooth_image(rng, (300, 200), 12)
    enc = EncodedImage.from_bytes(codec.encode(array, 12).to_bytes())
    small = codec.decode(enc, max_side=64)
    assert small.shape == (60, 40) and small.dtype == array.dtype  # factor ceil(300 / 64) = 5
    recon = codec._decode_latents(enc)[0]
    # every thumbnail pixel is its 5x5 block's mean of the preview reconstruction, rounded
    block_means = np.floor(recon[:300, :200].astype(np.float64).reshape(60, 5, 40, 5).mean(axis=(1, 3)) + 0.5)
    assert np.array_equal(small, block_means.astype(small.dtype))
    assert metrics.psnr(array[:300:5, :200:5], small, 12) > 20
    rgb = smooth_image(rng, (40, 50, 3), 8)
    assert codec.decode(codec.encode(rgb, 8, mode="lossy"), max_side=10).shape == (8, 10, 3)
    with pytest.raises(Exception, match="max_side"):
        codec.decode(enc, max_side=0)


def test_large_cpu_previews_skip_the_refiner(codec, rng):
    """Above cpu_preview_refine_max_pixels a CPU preview is the linear reconstruction itself."""
    from lowrank_batch.codec.codec import CodecConfig

    array = smooth_image(rng, (64, 80), 12)
    enc = codec.encode(array, 12)
    small_limit = Codec(codec.model, CodecConfig(cpu_preview_refine_max_pixels=100))
    linear = small_limit.decode(enc, preview=True)
    assert np.array_equal(linear, pixels.from_planes(codec._decode_latents(enc), enc.layout))
    assert np.array_equal(small_limit.decode_many([enc], preview=True)[0], linear)
    lossy = codec.encode(array, 12, mode="lossy")
    assert np.array_equal(small_limit.decode(lossy), codec.decode(lossy))  # lossy always refines
