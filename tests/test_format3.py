"""Format 3's pieces: remap tables as runs or bitmaps, strips, the fitted linear predictor,
bias cancellation and the preview budget (round trips of whole images: test_codec_roundtrip)."""

import dataclasses

import numpy as np
import pytest

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec import plane_header as ph
from lowrank_batch.codec.varint import write_signed
from lowrank_batch.codec.codec import CodecConfig
from lowrank_batch.codec.format import FORMAT_VERSION
from lowrank_batch.codec.linear_fit import as_class_table, fit_linear_predictor
from lowrank_batch.codec.residual_coder import (V3_TABLES, decode_plane, decode_plane_strips, encode_plane,
                                                encode_plane_strips, split_strips, strip_rows)
from lowrank_batch.errors import CorruptStreamError, InvalidParameterError

from .conftest import smooth_image


@pytest.mark.parametrize("seed", range(6))
def test_remap_tables_round_trip_in_either_coding(seed):
    rng = np.random.default_rng(seed)
    span = int(rng.integers(2, 5000))
    values = np.unique(rng.choice(span, size=int(rng.integers(1, span)), replace=True)) - 2000
    flag, table = ph.remap_table_bytes(values)
    out = bytearray()
    ph._write_plane_info_v3(out, ph.PlaneInfo(0, len(values) - 1, values))
    info, pos = ph._read_plane_info_v3(bytes(out), 0, ph.NUM_LINEAR_TAPS)
    assert pos == len(out) and np.array_equal(info.remap, values)
    runs = ph.value_runs(values)
    assert np.array_equal(ph.values_from_runs(int(values[0]), runs), values)
    bitmap_bytes = (int(values[-1] - values[0]) + 1 + 7) // 8
    assert len(table) <= bitmap_bytes + 8  # never much worse than a bitmap
    assert flag in (ph.PLANE_REMAP, ph.PLANE_REMAP_BITMAP)


def test_a_padded_ct_table_costs_bytes_not_kilobytes():
    values = np.concatenate(([-2000], np.arange(-1000, 2500)))  # padding + a dense body range
    flag, table = ph.remap_table_bytes(values)
    assert flag == ph.PLANE_REMAP and len(table) < 12


@pytest.mark.parametrize("header_tail, problem", [
    (bytes([ph.PLANE_REMAP | ph.PLANE_REMAP_BITMAP]), "plane flags"),
    (bytes([64]), "plane flags"),
    (bytes([ph.PLANE_REMAP, 0, 2, 1, 1]), "remap runs"),  # an even number of runs
    (bytes([ph.PLANE_REMAP, 0, 3, 2, 5, 2]), "remap runs"),  # 4 values for a range of 3
    (bytes([ph.PLANE_REMAP_BITMAP, 0, 100]), "remap bitmap"),  # truncated bitmap
    (bytes([ph.PLANE_LINEAR]) + b"\xff\xff\x07" * 10, "linear predictor"),
])
def test_damaged_plane_info_is_a_clear_error(header_tail, problem):
    head = bytearray()
    write_signed(head, 0)
    write_signed(head, 2)  # a range of 3 values
    with pytest.raises(CorruptStreamError, match=problem):
        ph._read_plane_info_v3(bytes(head) + header_tail, 0, ph.NUM_LINEAR_TAPS)


@pytest.mark.parametrize("strips, delta", [(1, 0), (3, 0), (4, 2)])
def test_strips_round_trip_and_match_their_plane_streams(rng, strips, delta):
    plane = smooth_image(rng, (300, 37), 12).astype(np.int64)
    side = np.clip(plane + rng.integers(-20, 21, plane.shape), 0, 4095)
    blob, values = encode_plane_strips(plane, 0, 4095, delta, side, 16, V3_TABLES, strips)
    out = decode_plane_strips(blob, 300, 37, 0, 4095, delta, side, 16, V3_TABLES)
    assert np.array_equal(out, values)
    assert np.abs(out - plane).max() <= delta
    pieces = split_strips(blob, 300, 16)
    assert [(a, b) for a, b, _ in pieces] == strip_rows(300, strips, 16) and len(pieces) == strips
    for r0, r1, piece in pieces:  # each strip is an independent plane stream
        alone = decode_plane(piece, r1 - r0, 37, 0, 4095, delta, side[r0:r1], 16, V3_TABLES)
        assert np.array_equal(alone, values[r0:r1])


def test_damaged_strip_headers_are_clear_errors(rng):
    plane = smooth_image(rng, (200, 20), 12).astype(np.int64)
    blob, _ = encode_plane_strips(plane, 0, 4095, strips=3, patch=16, tables=V3_TABLES)
    with pytest.raises(CorruptStreamError, match="strips"):
        split_strips(b"\x00" + blob[1:], 200, 16)
    with pytest.raises(CorruptStreamError, match="strips"):
        split_strips(b"\x11" + blob[1:], 200, 16)
    with pytest.raises(CorruptStreamError, match="wrong length"):
        split_strips(blob + b"\x00", 200, 16)
    with pytest.raises(CorruptStreamError, match="truncated"):
        split_strips(blob[:-10], 200, 16)
    with pytest.raises(InvalidParameterError, match="strips"):
        encode_plane_strips(plane[:70], 0, 4095, strips=5, patch=16)


def test_linear_fit_recovers_an_autoregressive_image():
    rng = np.random.default_rng(7)
    h, w = 160, 160
    x = np.zeros((h, w))
    noise = rng.normal(0, 3, (h, w))
    for i in range(1, h):  # x = 0.7 N + 0.5 W - 0.2 NW + noise
        for j in range(1, w):
            x[i, j] = 0.7 * x[i - 1, j] + 0.5 * x[i, j - 1] - 0.2 * x[i - 1, j - 1] + noise[i, j]
    plane = np.rint(x - x.min()).astype(np.int64)
    weights = fit_linear_predictor(plane) / 4096.0
    # predicts x - W from N - W (tap 0), NW - W (tap 1): x - W = 0.7 (N - W) - 0.2 (NW - W) + ...
    assert weights[0] == pytest.approx(0.7, abs=0.08) and weights[1] == pytest.approx(-0.2, abs=0.08)
    plain, _ = encode_plane(plane, 0, int(plane.max()), tables=V3_TABLES)
    fitted, _ = encode_plane(plane, 0, int(plane.max()),
                             tables=dataclasses.replace(V3_TABLES, lin=as_class_table(fit_linear_predictor(plane))))
    assert len(fitted) < len(plain)


def test_bias_cancellation_is_deterministic_and_pays_on_a_biased_texture():
    rng = np.random.default_rng(3)
    # a ramp the blend under-predicts in one direction, plus noise
    yy, xx = np.mgrid[0:128, 0:128]
    plane = (40 * np.sin(xx / 3.0) + 3 * yy + rng.normal(0, 2, (128, 128))).astype(np.int64)
    plane -= plane.min()
    without, _ = encode_plane(plane, 0, int(plane.max()), tables=dataclasses.replace(V3_TABLES, bias=False))
    with_bias, _ = encode_plane(plane, 0, int(plane.max()), tables=V3_TABLES)
    again, _ = encode_plane(plane, 0, int(plane.max()), tables=V3_TABLES)
    assert with_bias == again
    assert len(with_bias) < len(without)
    assert np.array_equal(decode_plane(with_bias, 128, 128, 0, int(plane.max()), tables=V3_TABLES), plane)


def test_preview_is_kept_within_its_budget_where_the_residual_does_not_use_it(codec):
    from lowrank_batch.devcorpus import dev_images

    ct = next(im for im in dev_images(("ct",)) if im.name.startswith("eCT_Supplemental"))
    enc = codec.encode(ct.pixels, ct.bits_stored)
    assert not any(p.guided for p in enc.planes)
    total = len(enc.to_bytes())
    assert len(enc.latent_stream) <= 0.011 * total, (len(enc.latent_stream), total)
    roomy = Codec(codec.model, CodecConfig(preview_budget=1.0)).encode(ct.pixels, ct.bits_stored)
    assert (len(roomy.latent_stream) > len(enc.latent_stream) and roomy.rank > enc.rank
            or roomy.latent_step < enc.latent_step)
    preview = codec.decode(EncodedImage.from_bytes(enc.to_bytes()), preview=True)
    assert preview.shape == ct.pixels.shape
    assert np.array_equal(codec.decode(EncodedImage.from_bytes(enc.to_bytes())), ct.pixels)


def test_older_versions_still_encode(codec, rng):
    image = smooth_image(rng, (30, 30), 12)
    assert codec.encode(image, 12).to_bytes()[4] == FORMAT_VERSION == 6  # the default since format 6
    for version in (1, 2, 3, 4, 5):
        blob = codec.encode(image, 12, format_version=version).to_bytes()
        assert blob[4] == version
        assert np.array_equal(codec.decode(EncodedImage.from_bytes(blob)), image)


@pytest.mark.parametrize("wide", [False, True])  # format 5 may widen the taps
def test_tap_differences_match_a_per_pixel_reference(rng, wide):
    """The fit's samples (taps - W, x - W), computed on padded row blocks, against the rule
    written out per pixel: W is the left neighbour (the pixel's own value in column 0), a tap
    outside the image reads W."""
    from lowrank_batch.codec.context_model import LIN_TAPS, LIN_TAPS_WIDE
    from lowrank_batch.codec.linear_fit import _tap_differences

    taps = LIN_TAPS_WIDE if wide else LIN_TAPS
    for _ in range(20):
        h, w = rng.integers(1, 12, 2)
        plane = rng.integers(-50, 4000, (h, w))
        rows = np.unique(rng.integers(0, h, rng.integers(1, h + 1)))
        a, y = _tap_differences(plane, rows, taps)
        k = 0
        for r in rows:
            for j in range(w):
                west = plane[r, j - 1] if j > 0 else plane[r, 0]
                for t, (di, dj) in enumerate(taps.tolist()):
                    inside = r + di >= 0 and 0 <= j + dj < w
                    assert a[k, t] == (plane[r + di, j + dj] if inside else west) - west
                assert y[k] == plane[r, j] - west
                k += 1
        assert k == len(y)
