"""Format 5: the blend's predictor weights are trained (the format's defaults) and a plane coded
with other weights carries its own in its header, so the decoder needs nothing but the bytes."""

import dataclasses

import numpy as np
from numba import njit
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec import blend
from lowrank_batch.codec import context_model as cm
from lowrank_batch.codec import plane_header as ph
from lowrank_batch.codec.codec import CodecConfig
from lowrank_batch.codec.format import FORMAT_VERSION
from lowrank_batch.codec.plane_header import PlaneInfo, plane_predictor_weights, predictor_roles
from lowrank_batch.errors import CorruptStreamError, InvalidParameterError

from .conftest import smooth_image

OWN = (13, 12, 12, 12, 12, 12, 12, 20, 20, 24)  # the weights formats 1-4 used, but for the last three


def test_format_constants_match_the_context_model():
    assert ph.PLAIN_PREDICTORS == cm.PLAIN_PREDICTORS and ph.NUM_PREDICTORS == cm.NUM_PREDICTORS
    assert ph.DEFAULT_PREDICTOR_WEIGHTS == tuple(blend.PREDICTOR_MAX_WEIGHTS.tolist())
    assert ph.V5_PREDICTOR_WEIGHTS == blend.TRAINED_PREDICTOR_WEIGHTS
    assert ph.MAX_PREDICTOR_WEIGHT == blend.MAX_PREDICTOR_WEIGHT
    assert blend.LINEAR_ROLE == ph.predictor_roles(True, True)[-1]


@njit
def _error_weights(sums, max_weight):
    out = np.empty_like(sums)
    for k in range(sums.size):
        out[k] = blend._error_weight(sums[k], max_weight)
    return out


def test_the_weight_table_is_the_error_weight_of_every_small_sum():
    table = blend.weight_table(OWN)
    assert table.shape == (cm.NUM_PREDICTORS, blend.WEIGHT_TABLE_SIZE + 1)
    for k, m in enumerate(OWN):
        assert table[k, blend.WEIGHT_TABLE_SIZE] == m
        every_sum = np.arange(blend.WEIGHT_TABLE_SIZE, dtype=np.int64)
        assert np.array_equal(table[k, : blend.WEIGHT_TABLE_SIZE], _error_weights(every_sum, m))
    assert blend.weight_table(list(OWN)) is table  # one table per weight set, shared by every plane


def test_the_blend_table_puts_the_linear_predictor_where_the_blend_has_it():
    table = blend.weight_table(OWN)
    assert blend.blend_table(table, True, True) is table and blend.blend_table(table, False, False) is table
    no_side = blend.blend_table(table, False, True)  # the linear predictor right after the plain ones
    assert np.array_equal(no_side[: cm.PLAIN_PREDICTORS], table[: cm.PLAIN_PREDICTORS])
    assert np.array_equal(no_side[cm.PLAIN_PREDICTORS], table[blend.LINEAR_ROLE])
    # formats 1-4: every position but the first weighs alike, so the remapping changes nothing
    default = blend.DEFAULT_WEIGHT_TABLE
    assert np.array_equal(blend.blend_table(default, False, True), default[: cm.PLAIN_PREDICTORS + 1])


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("linear", [False, True])
def test_plane_weights_round_trip_through_the_header(guided, linear):
    lin = np.arange(ph.NUM_LINEAR_TAPS) - 4 if linear else None
    weights = plane_predictor_weights((200, 1, 2, 3, 4, 5, 6, 7, 8, 255), guided, linear)
    plane = PlaneInfo(0, 4095, None, guided, lin, None, weights)
    out = bytearray()
    ph._write_plane_info_v3(out, plane)
    back, pos = ph._read_plane_info_v3(bytes(out), 0, ph.NUM_LINEAR_TAPS, version=5)
    assert pos == len(out) and np.array_equal(back.predictor_weights, weights)
    # roles the plane does not use keep the format's defaults: nothing about them is stored
    unused = sorted(set(range(ph.NUM_PREDICTORS)) - set(predictor_roles(guided, linear)))
    assert all(back.predictor_weights[r] == ph.V5_PREDICTOR_WEIGHTS[r] for r in unused)
    default = PlaneInfo(0, 4095, None, guided, lin, None, plane_predictor_weights(ph.V5_PREDICTOR_WEIGHTS, guided,
                                                                                  linear))
    short = bytearray()
    ph._write_plane_info_v3(short, default)  # the format's own weights cost no bytes
    varint_bytes = [2 if weights[r] >= 128 else 1 for r in predictor_roles(guided, linear)]
    assert len(out) - len(short) == sum(varint_bytes)
    back, _ = ph._read_plane_info_v3(bytes(short), 0, ph.NUM_LINEAR_TAPS, version=5)
    assert np.array_equal(back.predictor_weights, default.predictor_weights)


def _plane_bytes(first_weight_bytes: bytes) -> bytes:
    plane = PlaneInfo(0, 255, None, False, None, None, plane_predictor_weights(OWN, False, False))
    out = bytearray()
    ph._write_plane_info_v3(out, plane)
    weights_at = len(out) - ph.PLAIN_PREDICTORS
    assert out[weights_at] == OWN[0]
    return bytes(out[:weights_at]) + first_weight_bytes + bytes(out[weights_at + 1:])


@pytest.mark.parametrize("damage, message", [(b"\x00", "predictor weight 0"), (b"\x80\x02", "predictor weight 256"),
                                             (b"\xff" * 12, "varint too long")])
def test_a_damaged_weight_is_a_corrupt_header(damage, message):
    ph._read_plane_info_v3(_plane_bytes(bytes([OWN[0]])), 0, ph.NUM_LINEAR_TAPS, version=5)  # undamaged: reads
    with pytest.raises(CorruptStreamError, match=message):
        ph._read_plane_info_v3(_plane_bytes(damage), 0, ph.NUM_LINEAR_TAPS, version=5)
    with pytest.raises(CorruptStreamError, match="truncated"):
        ph._read_plane_info_v3(_plane_bytes(bytes([OWN[0]]))[:-1], 0, ph.NUM_LINEAR_TAPS, version=5)


def test_the_weights_flag_is_unknown_before_format_5():
    out = bytearray()
    weights = plane_predictor_weights(OWN, False, False)
    ph._write_plane_info_v3(out, PlaneInfo(0, 255, None, False, None, None, weights))
    with pytest.raises(CorruptStreamError, match="plane flags"):
        ph._read_plane_info_v3(bytes(out), 0, ph.NUM_LINEAR_TAPS, version=4)


def test_older_versions_refuse_weights(codec, rng):
    enc = codec.encode(smooth_image(rng, (20, 20), 12), 12, format_version=4)
    assert enc.planes[0].predictor_weights is None
    enc.planes[0].predictor_weights = plane_predictor_weights(OWN, False, False)
    with pytest.raises(InvalidParameterError, match="no predictor weights"):
        enc.to_bytes()


@pytest.mark.parametrize("weights", [(1,) * 9, (0,) + OWN[1:], OWN[:-1] + (256,), OWN[:-1] + (2.5,)])
def test_the_config_refuses_bad_weights(weights):
    with pytest.raises(InvalidParameterError, match="predictor_weights"):
        CodecConfig(predictor_weights=weights)


def test_the_config_keeps_weights_as_a_tuple():
    assert CodecConfig(predictor_weights=list(OWN)).predictor_weights == OWN
    assert CodecConfig().predictor_weights == ph.V5_PREDICTOR_WEIGHTS


def test_an_image_coded_with_its_own_weights_decodes_with_any_config(codec, rng):
    image = smooth_image(rng, (64, 72), 12)
    own = Codec(codec.model, dataclasses.replace(codec.config, predictor_weights=OWN))
    enc, mine = codec.encode(image, 12), own.encode(image, 12)
    assert enc.version == mine.version == FORMAT_VERSION
    assert np.array_equal(enc.planes[0].predictor_weights,
                          plane_predictor_weights(ph.V5_PREDICTOR_WEIGHTS, enc.planes[0].guided,
                                                  enc.planes[0].linear is not None))
    assert not np.array_equal(mine.planes[0].predictor_weights, enc.planes[0].predictor_weights)
    assert enc.residual_streams != mine.residual_streams  # the weights steer the prediction
    for blob in (enc.to_bytes(), mine.to_bytes()):  # the header, not the decoder's config, says
        for decoder in (codec, own):
            assert np.array_equal(decoder.decode(EncodedImage.from_bytes(blob)), image)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), bits=st.integers(8, 16), channels=st.sampled_from([None, 3]),
       mode=st.sampled_from(["lossless", "near-lossless"]),
       weights=st.lists(st.integers(1, 255), min_size=10, max_size=10))
def test_any_weights_round_trip(codec, seed, bits, channels, mode, weights):
    rng = np.random.default_rng(seed)
    image = smooth_image(rng, (40, 36) if channels is None else (40, 36, channels), bits)
    coder = Codec(codec.model, dataclasses.replace(codec.config, predictor_weights=tuple(weights)))
    delta = 1 if mode == "near-lossless" else None
    enc = coder.encode(image, bits, mode=mode, max_error=delta)
    out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert np.abs(out.astype(np.int64) - image).max() <= (delta or 0)


def test_format_5_refreshes_histograms_more_often():
    from lowrank_batch.codec.residual_coder import V4_TABLES, V5_TABLES

    assert V4_TABLES.refresh == (cm.MIN_SEGMENT, cm.REFRESH_SHIFT) == (16, 2)  # formats 1-4, fixed
    assert V5_TABLES.refresh == cm.V5_REFRESH
    assert np.array_equal(V5_TABLES.weight_table, blend.weight_table(ph.V5_PREDICTOR_WEIGHTS))
    codec = Codec.load()
    assert codec._version_tables(5, None) is V5_TABLES and codec._version_tables(4, None) is V4_TABLES


@pytest.mark.parametrize("refresh", [(16, 2), cm.V5_REFRESH, (1, 6)])
@pytest.mark.parametrize("kind", ["noise", "flat", "one_bucket"])
def test_the_snapshot_bound_holds(rng, refresh, kind):
    """The encoder's snapshot array is sized by max_snapshots and written without bounds checks:
    the bound must hold however the pixels spread over the buckets."""
    from lowrank_batch.codec.residual_coder import V5_TABLES, max_snapshots, model_pass

    shape = (96, 200)
    if kind == "noise":
        plane = rng.integers(0, 4096, shape)
    elif kind == "flat":  # one bucket (flat neighbourhoods) takes almost every pixel
        plane = np.full(shape, 700)
        plane[::17, ::13] += 1
    else:  # steady small errors: most pixels in one activity bucket
        plane = 2000 + (np.arange(shape[1])[None, :] % 2) * 3 + np.zeros(shape, dtype=np.int64)
    tables = dataclasses.replace(V5_TABLES, refresh=refresh)
    mp = model_pass(plane, int(plane.min()), int(plane.max()), 0, None, 8, tables)
    bound = max_snapshots(plane.size, tables.num_buckets, refresh)
    assert tables.num_buckets < len(mp.snapshots) <= bound


def test_the_wide_taps_extend_the_narrow_ones_on_earlier_wavefronts():
    assert np.array_equal(cm.LIN_TAPS_WIDE[: len(cm.LIN_TAPS)], cm.LIN_TAPS)
    assert len(cm.LIN_TAPS_WIDE) == ph.NUM_WIDE_LINEAR_TAPS and len(set(map(tuple, cm.LIN_TAPS_WIDE.tolist()))) == 16
    back = 2 * cm.LIN_TAPS_WIDE[:, 0] + cm.LIN_TAPS_WIDE[:, 1]  # wavefronts back from the pixel's
    assert (back < 0).all() and (-back < cm.RING).all()  # decoded already, and still in the ring
    assert np.abs(cm.LIN_TAPS_WIDE[:, 1]).max() <= 3 and cm.LIN_TAPS_WIDE[:, 0].min() >= -3  # the fast path's bounds


@pytest.mark.parametrize("sets", [1, ph.LINEAR_PARITY_SETS])
def test_wide_linear_weights_round_trip_through_the_header(rng, sets):
    weights = rng.integers(-(1 << 14), 1 << 14, (sets, ph.NUM_WIDE_LINEAR_TAPS))
    linear = weights[0] if sets == 1 else weights
    defaults = plane_predictor_weights(ph.V5_PREDICTOR_WEIGHTS, False, True)
    plane = PlaneInfo(0, 4095, None, False, linear, None, defaults)
    out = bytearray()
    ph._write_plane_info_v3(out, plane)
    back, pos = ph._read_plane_info_v3(bytes(out), 0, ph.NUM_LINEAR_TAPS, version=5)
    assert pos == len(out) and np.array_equal(back.linear, linear)
    with pytest.raises(CorruptStreamError, match="plane flags"):  # flag 128 is format 5's
        ph._read_plane_info_v3(bytes(out), 0, ph.NUM_LINEAR_TAPS, version=4)


def test_older_versions_refuse_wide_linear_weights(codec, rng):
    enc = codec.encode(smooth_image(rng, (20, 20), 12), 12, format_version=4)
    enc.planes[0].linear = np.zeros(ph.NUM_WIDE_LINEAR_TAPS, dtype=np.int64)
    with pytest.raises(InvalidParameterError, match="no linear predictor of 16 taps"):
        enc.to_bytes()
    enc.planes[0].linear = np.zeros(12, dtype=np.int64)
    enc.version = 5
    with pytest.raises(InvalidParameterError, match="no linear predictor of 12 taps"):
        enc.to_bytes()


def test_the_wide_flag_needs_a_linear_predictor():
    out = bytearray()
    ph._write_plane_info_v3(out, PlaneInfo(0, 255))
    flags_at = len(out) - 1
    damaged = bytearray(out)
    damaged[flags_at] |= ph.PLANE_LINEAR_WIDE
    with pytest.raises(CorruptStreamError, match="plane flags"):
        ph._read_plane_info_v3(bytes(damaged), 0, ph.NUM_LINEAR_TAPS, version=5)


def test_a_ct_slice_takes_the_wide_predictor_and_decodes_exactly(codec):
    """The dev corpus's 512^2 CT: its 16-tap fit saves ~0.8% (the trial scales the crop's
    saving to the plane); decoded bit for bit on one and two threads."""
    from lowrank_batch.devcorpus import dev_images

    ct = next(im for im in dev_images(("ct",)) if im.name.startswith("693_UNCR"))
    enc = codec.encode(ct.pixels, ct.bits_stored)
    assert enc.planes[0].linear.shape == (ph.NUM_WIDE_LINEAR_TAPS,)
    narrow = codec.encode(ct.pixels, ct.bits_stored, format_version=4)
    assert narrow.planes[0].linear.shape == (ph.NUM_LINEAR_TAPS,)
    blob = enc.to_bytes()
    for threads in (1, 2):
        assert np.array_equal(codec.decode(EncodedImage.from_bytes(blob), threads=threads), ct.pixels)


def test_the_parity_screen_passes_interpolated_images_only(rng):
    """Format 5 runs the four parity fits only where the one-set fit errs unevenly by parity."""
    from pathlib import Path

    from lowrank_batch.codec.linear_fit import fit_parity_predictor, fit_samples, parity_errors_differ

    upsampled = np.load(Path(__file__).parent / "golden" / "v4" / "u12_upsampled_lossless.src.npy").astype(np.int64)
    smooth = smooth_image(rng, (96, 96), 12).astype(np.int64)
    assert parity_errors_differ(fit_samples(upsampled)) and fit_parity_predictor(upsampled)[1] >= 0.05
    assert not parity_errors_differ(fit_samples(smooth)) and fit_parity_predictor(smooth)[1] < 0.05
    assert not parity_errors_differ(fit_samples(np.full((8, 8), 5)))  # too few samples to tell
