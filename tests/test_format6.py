"""Format 6: a plane predicted with linear weights per position parity (an image interpolated
2x) also keeps histograms per parity; every other plane codes exactly as in format 5."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_batch import EncodedImage
from lowrank_batch.codec import context_model as cm
from lowrank_batch.codec import metrics
from lowrank_batch.codec.format import FORMAT_VERSION
from lowrank_batch.codec.linear_fit import fit_parity_predictor
from lowrank_batch.codec.plane_v4 import encode_plane_v4
from lowrank_batch.codec.residual_coder import (V5_TABLES, activity_levels, decode_plane_strips, model_pass,
                                                with_parity_context, with_value_classes)

from .conftest import smooth_image
from .test_format4 import photon_image, upsampled_image


def _is_parity_plane(plane_info) -> bool:
    return plane_info.linear is not None and plane_info.linear.shape[0] == cm.LIN_PARITY_CLASSES


def test_format_6_is_the_default():
    assert FORMAT_VERSION == 6


def test_parity_tables_split_every_bucket_from_its_own_prior():
    tables = with_parity_context(V5_TABLES)
    assert tables.nx == cm.PARITY_CONTEXT and tables.num_buckets == 4 * V5_TABLES.num_buckets
    assert np.array_equal(tables.lut, np.arange(tables.num_buckets))
    for b in (0, 7, V5_TABLES.num_buckets - 1):
        for parity in range(4):
            assert np.array_equal(tables.prior[4 * b + parity], V5_TABLES.prior[b])
    buckets = np.arange(tables.num_buckets)
    assert np.array_equal(activity_levels(buckets, tables), (buckets // 4) % cm.NUM_LEVELS)
    assert np.array_equal(activity_levels(np.arange(160), V5_TABLES), np.arange(160) % cm.NUM_LEVELS)
    with pytest.raises(AssertionError):
        with_parity_context(tables)  # split once only


def test_an_interpolated_image_codes_smaller_than_format_5_and_decodes_bit_exact(codec, rng):
    image = upsampled_image(rng, (192, 224)).astype(np.uint16)
    enc = codec.encode(image, 12)
    old = codec.encode(image, 12, format_version=5)
    assert enc.version == 6 and _is_parity_plane(enc.planes[0]) and _is_parity_plane(old.planes[0])
    assert enc.encoded_bytes < 0.95 * old.encoded_bytes  # measured: 9% smaller
    blob = enc.to_bytes()
    for threads in (1, 2):
        assert np.array_equal(codec.decode(EncodedImage.from_bytes(blob), threads=threads), image)
    # the format-5 bytes still decode as format 5 (no parity histograms)
    assert np.array_equal(codec.decode(EncodedImage.from_bytes(old.to_bytes())), image)


@pytest.mark.parametrize("delta", [1, 2])
def test_near_lossless_on_an_interpolated_image_keeps_its_bound(codec, rng, delta):
    image = upsampled_image(rng, (128, 160)).astype(np.uint16)
    enc = codec.encode(image, 12, mode="near-lossless", max_error=delta)
    out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert metrics.max_abs_error(image, out) <= delta


def test_planes_without_parity_weights_code_as_in_format_5(codec, rng):
    image = smooth_image(rng, (96, 112), 12).astype(np.uint16)
    enc, old = codec.encode(image, 12), codec.encode(image, 12, format_version=5)
    assert not _is_parity_plane(enc.planes[0])
    assert enc.residual_streams == old.residual_streams and enc.latent_stream == old.latent_stream


def test_strips_and_intensity_bands_combine_with_parity_histograms(rng):
    """The kernel's bucket is ((activity bucket x 4 + parity) x bands + band): the encoder's
    band pass must count the same buckets as the decoder, strip by strip (strips start on even
    rows, so parity is the image's)."""
    plane = photon_image(rng, (192, 128), gain=0.05)
    plane[1::2] = (plane[:-1:2] + np.roll(plane, -2, axis=0)[:-1:2]) // 2  # interpolated rows
    weights, _ = fit_parity_predictor(plane)
    tables = with_parity_context(dataclasses.replace(V5_TABLES, lin=weights))
    thresholds = np.array([600, 1500, 2600], dtype=np.int64)
    banded = with_value_classes(tables, thresholds)
    blob, values, used = encode_plane_v4(plane, 0, 4095, 0, None, 8, banded, strips=2)
    assert used is not None and np.array_equal(used, thresholds)
    assert np.array_equal(values, plane)
    assert np.array_equal(decode_plane_strips(blob, *plane.shape, 0, 4095, 0, None, 8, banded), plane)
    # 640 buckets do not fit the model pass's uint8: it keeps them whole
    mp = model_pass(plane, 0, 4095, 0, None, 8, tables)
    assert mp.buckets.dtype == np.uint16 and mp.buckets.max() >= 256


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([8, 10, 12, 16]), channels=st.sampled_from([None, 3]),
       mode=st.sampled_from(["lossless", "near-lossless"]), seed=st.integers(0, 2**31 - 1))
def test_interpolated_images_round_trip_at_any_depth(codec, bits, channels, mode, seed):
    rng = np.random.default_rng(seed)
    plane = upsampled_image(rng, (64, 80), bits)
    array = plane if channels is None else np.stack([plane, plane // 2, np.roll(plane, 2, 1)], axis=2)
    array = array.astype(np.uint8 if bits == 8 else np.uint16)
    delta = 1 if mode == "near-lossless" else None
    enc = codec.encode(array, bits, mode=mode, max_error=delta)
    out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert metrics.max_abs_error(array, out) <= (delta or 0)


def test_a_parity_plane_keeps_bias_corrections_per_parity():
    """_cancel_bias's context on a parity plane is version 5's context x 4 + parity (and the
    state holds 4x the contexts); elsewhere it is version 5's."""
    plain, split = cm.ModelState(4, 8, None, bias=True), cm.ModelState(4, 8, None, bias=True, parity_context=True)
    assert split.bias_sum.size == cm.LIN_PARITY_CLASSES * plain.bias_sum.size == 4 * cm.BIAS_CONTEXTS
    args = (8 * 100, 5, 101, 99, 100, 102, 3, -2, 1, 0)  # pred (1/8 px), bucket, w, n, nw, ne, errors
    cm._cancel_bias(0, 1, *args, plain.bias_ring, plain.bias_corr, -1)
    base = plain.bias_ring[0, 1, 0]
    for parity in range(4):
        cm._cancel_bias(0, 1, *args, split.bias_ring, split.bias_corr, parity)
        assert split.bias_ring[0, 1, 0] == base * cm.LIN_PARITY_CLASSES + parity


def test_the_parity_blend_weighs_the_same_parity_errors_too():
    from lowrank_batch.codec import blend

    table = blend.weight_table(blend.TRAINED_PREDICTOR_WEIGHTS)
    sub = np.array([800, 880, 840, 820, 860, 810, 830, 850, 870, 900], dtype=np.int64)
    n = len(sub)
    perr = np.zeros((cm.RING, 8, 2 * blend.NUM_PREDICTORS), dtype=np.int64)
    perr[:, :, :blend.NUM_PREDICTORS] = 3  # every pixel's own error 3, with its W neighbour's 6
    perr[:, :, blend.NUM_PREDICTORS:] = 6
    t, i, j, width = 20, 4, 12, 40
    s1, s2 = (t - 1) % cm.RING, (t - 2) % cm.RING
    weights = np.zeros(blend.NUM_PREDICTORS, dtype=np.int64)
    nearest = blend._weighted_average(sub, n, perr, weights, table, s1, s2, i, True, True, True)
    parity = blend._weighted_average_parity(sub, n, perr, weights, table, t, s1, s2, i, j, width, True, True, True)
    assert parity == nearest  # same-parity sums (5 x 3) equal the nearest ones (6 + 6 + 3)
    # the linear predictor (the most trusted) errs at the same-parity pixels only: trusted less
    k = n - 1
    for slot, row in (((t - 2) % cm.RING, i), ((t - 4) % cm.RING, i), ((t - 4) % cm.RING, i - 2),
                      ((t - 6) % cm.RING, i - 2), ((t - 2) % cm.RING, i - 2)):
        perr[slot, row, k] = 200
    perr[s1, i, blend.NUM_PREDICTORS + k] = perr[s2, i - 1, blend.NUM_PREDICTORS + k] = 6
    perr[s1, i - 1, k] = 3
    assert blend._weighted_average(sub, n, perr, weights, table, s1, s2, i, True, True, True) == nearest
    moved = blend._weighted_average_parity(sub, n, perr, weights, table, t, s1, s2, i, j, width, True, True, True)
    assert abs(moved - sub[k]) > abs(nearest - sub[k])
