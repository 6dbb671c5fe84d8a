"""Format 4's pieces: one range-coder stream per strip in coding order, and per-plane intensity
bands (the histogram of a pixel depends on the brightness of its neighbours too)."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec import plane_header as ph
from lowrank_batch.codec.varint import write_signed, write_varint
from lowrank_batch.codec import context_model as cm
from lowrank_batch.codec import metrics, trials
from lowrank_batch.codec.format import FORMAT_VERSION
from lowrank_batch.codec.linear_fit import fit_parity_predictor
from lowrank_batch.codec.plane_v4 import BAND_CANDIDATES, encode_plane_v4, model_bits
from lowrank_batch.codec.residual_coder import (V3_TABLES, V4_TABLES, band_buckets, decode_plane,
                                                decode_plane_strips, encode_plane, encode_plane_strips,
                                                histogram_pass, in_order_stream, model_pass,
                                                with_value_classes)
from lowrank_batch.errors import CorruptStreamError, InvalidParameterError

from .conftest import smooth_image


def photon_image(rng, shape=(128, 160), bits=12, gain=0.03):
    """Noise that grows with intensity, as in a radiograph: the case intensity bands are for."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    maxval = (1 << bits) - 1
    mean = maxval * (0.05 + 0.85 * (xx / (w - 1)) ** 2 * (0.6 + 0.4 * np.cos(yy / 9.0)))
    return np.clip(np.rint(mean + rng.normal(0, 1, shape) * mean * gain), 0, maxval).astype(np.int64)


def test_the_histogram_pass_gives_the_model_pass_snapshots(rng):
    plane = photon_image(rng, (70, 90))
    mp = model_pass(plane, 0, 4095, 0, None, 8, V4_TABLES)
    again, cost = histogram_pass(mp, mp.buckets, V4_TABLES)
    # every pixel coded with the same histogram (the snapshots may be numbered otherwise)
    assert np.array_equal(again.snapshots[again.snaps.astype(int)], mp.snapshots[mp.snaps.astype(int)])
    assert in_order_stream(again) == in_order_stream(mp)
    assert cost == model_bits(mp) > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), h=st.integers(1, 60), w=st.integers(1, 60), bits=st.integers(8, 16),
       bands=st.integers(1, 7), delta=st.sampled_from([0, 0, 1, 3]), strips=st.integers(1, 3))
def test_any_bands_round_trip(seed, h, w, bits, bands, delta, strips):
    rng = np.random.default_rng(seed)
    plane = photon_image(rng, (max(h, 2), max(w, 2)), bits)
    hi = int(plane.max())
    thresholds = np.unique(rng.integers(1, max(2, hi + 1), bands))
    tables = with_value_classes(V4_TABLES, thresholds)
    strips = min(strips, max(1, plane.shape[0] // 8))
    try:
        blob, values, used = encode_plane_v4(plane, 0, hi, delta, None, 8, tables, strips)
    except Exception as e:  # a strip count the rows cannot hold is refused, clearly
        assert "strips" in str(e)
        return
    assert np.array_equal(used, thresholds)
    out = decode_plane_strips(blob, *plane.shape, 0, hi, delta, None, 8, tables)
    assert np.array_equal(out, values)
    assert np.abs(out - plane).max() <= delta


def test_band_buckets_are_activity_bucket_times_bands_plus_band(rng):
    plane = photon_image(rng, (40, 50))
    mp = model_pass(plane, 0, 4095, 0, None, 8, V4_TABLES)
    thresholds = np.array([500, 1500, 3000])
    buckets = band_buckets(mp, thresholds)
    assert np.array_equal(buckets // 4, mp.buckets) and buckets.max() < 4 * V4_TABLES.num_buckets
    assert set(np.unique(buckets % 4)) == {0, 1, 2, 3}


def test_bands_are_chosen_where_noise_follows_intensity_and_pay(rng):
    plane = photon_image(rng, (256, 256))
    with_bands, _, thresholds = encode_plane_v4(plane, 0, 4095, 0, None, 8, V4_TABLES, 1)
    without, _, none = encode_plane_v4(plane, 0, 4095, 0, None, 8, V4_TABLES, 1, choose_bands=False)
    assert none is None and thresholds is not None and 1 <= len(thresholds) <= 7
    assert len(with_bands) < len(without)
    # and where the noise does not depend on intensity, they are not worth their header
    flat_noise = smooth_image(rng, (256, 256), 12).astype(np.int64)
    _, _, chosen = encode_plane_v4(flat_noise, 0, 4095, 0, None, 8, V4_TABLES, 1)
    if chosen is not None:  # if chosen, they must have paid
        plain, _, _ = encode_plane_v4(flat_noise, 0, 4095, 0, None, 8, V4_TABLES, 1, choose_bands=False)
        banded, _, _ = encode_plane_v4(flat_noise, 0, 4095, 0, None, 8, V4_TABLES, 1)
        assert len(banded) < len(plain)


def test_one_stream_in_coding_order_is_smaller_than_format_3s_layouts(rng):
    plane = photon_image(rng, (200, 200))
    v3, _ = encode_plane_strips(plane, 0, 4095, 0, None, 8, V3_TABLES, 1)
    v4, _, _ = encode_plane_v4(plane, 0, 4095, 0, None, 8, V4_TABLES, 1, choose_bands=False)
    assert len(v4) < len(v3)  # the same tokens and models, without per-bucket lengths and flushes


def test_damaged_in_order_streams_are_clear_errors(rng):
    plane = photon_image(rng, (48, 48))
    blob, _ = encode_plane(plane, 0, 4095, 0, None, 8, V4_TABLES)
    for bad in (blob[:-1], blob + b"\0", blob[:3]):
        with pytest.raises(CorruptStreamError):
            decode_plane(bad, 48, 48, 0, 4095, 0, None, 8, V4_TABLES)
    for k in range(20):  # flipped bits: an error or other pixels, never a crash
        damaged = bytearray(blob)
        damaged[int(rng.integers(4, len(blob)))] ^= 1 << int(rng.integers(0, 8))
        try:
            decode_plane(bytes(damaged), 48, 48, 0, 4095, 0, None, 8, V4_TABLES)
        except CorruptStreamError:
            pass


def _plane_header(info: ph.PlaneInfo) -> bytes:
    out = bytearray()
    ph._write_plane_info_v3(out, info)
    return bytes(out)


def test_band_thresholds_round_trip_in_the_header():
    info = ph.PlaneInfo(-5, 4000, value_classes=np.array([-4, 7, 300, 3999]))
    head = _plane_header(info)
    back, pos = ph._read_plane_info_v3(head, 0, ph.NUM_LINEAR_TAPS, 4)
    assert pos == len(head) and np.array_equal(back.value_classes, info.value_classes)
    with pytest.raises(CorruptStreamError, match="plane flags"):  # format 3 never had them
        ph._read_plane_info_v3(head, 0, ph.NUM_LINEAR_TAPS, 3)


@pytest.mark.parametrize("tail, problem", [
    (bytes([0]), "band count"),
    (bytes([8]) + bytes(8), "band count"),
    (bytes([2, 20, 0]), "thresholds"),  # not increasing
    (bytes([1, 0]), "thresholds"),  # at the plane's lowest value: no pixel below it
    (bytes([1, 0xC8, 0x01]), "thresholds"),  # 100 is above the plane's range
])
def test_damaged_band_thresholds_are_clear_errors(tail, problem):
    head = bytearray()
    write_signed(head, 0)
    write_signed(head, 50)
    head.append(ph.PLANE_VALUE_CLASSES)
    with pytest.raises(CorruptStreamError, match=problem):
        ph._read_plane_info_v3(bytes(head) + tail, 0, ph.NUM_LINEAR_TAPS, 4)


def _huge_varint() -> bytes:
    out = bytearray()
    write_varint(out, 1 << 70)  # past int64: must not reach a numpy array
    return bytes(out)


@pytest.mark.parametrize("part", ["range", "linear", "thresholds"])
def test_huge_header_numbers_are_corrupt_stream_errors(part):
    """A damaged header whose varints exceed 64 bits gives CorruptStreamError, never
    OverflowError from numpy or numba."""
    head = bytearray()
    if part == "range":
        write_signed(head, 0)
        head += _huge_varint()
        head.append(0)
    else:
        write_signed(head, 0)
        write_signed(head, 50)
        if part == "linear":
            head.append(ph.PLANE_LINEAR | ph.PLANE_LINEAR_PARITY)
            head += _huge_varint() * (ph.LINEAR_PARITY_SETS * ph.NUM_LINEAR_TAPS)
        else:
            head.append(ph.PLANE_VALUE_CLASSES)
            head += bytes([2]) + bytes([2]) + _huge_varint()
    with pytest.raises(CorruptStreamError, match="corrupt"):
        ph._read_plane_info_v3(bytes(head), 0, ph.NUM_LINEAR_TAPS, 4)


def test_format_constants_match_the_context_model():
    """plane_header.py keeps its own copies (it reads headers without the kernels); they must agree."""
    assert ph.NUM_LINEAR_TAPS == len(cm.LIN_TAPS)
    assert ph.LINEAR_PARITY_SETS == cm.LIN_PARITY_CLASSES
    assert max(BAND_CANDIDATES) - 1 <= ph.MAX_VALUE_THRESHOLDS


def test_older_versions_refuse_bands(codec, rng):
    enc = codec.encode(smooth_image(rng, (20, 20), 12), 12, format_version=3)
    enc.planes[0].value_classes = np.array([100])
    with pytest.raises(InvalidParameterError, match="no intensity bands"):
        enc.to_bytes()


@pytest.fixture(scope="module")
def banding_codec():
    """Tries bands on every plane, keeps any that save bits, and cuts planes into 4K-pixel strips."""
    base = Codec.load()
    return Codec(base.model, dataclasses.replace(base.config, band_min_pixels=0, band_min_gain=0.0, strip_pixels=4096))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), bits=st.integers(8, 16), channels=st.sampled_from([None, 3]),
       mode=st.sampled_from(["lossless", "near-lossless"]), sparse=st.booleans())
def test_whole_images_with_bands_round_trip(banding_codec, seed, bits, channels, mode, sparse):
    rng = np.random.default_rng(seed)
    plane = photon_image(rng, (96, 80), bits, gain=0.05)
    if sparse:  # every 5th value: coded as indices, the bands in index space
        plane = plane // 5 * 5
    array = plane if channels is None else np.stack([plane, plane // 2, np.roll(plane, 3, 1)], axis=2)
    array = array.astype(np.uint16 if bits > 8 else np.uint8)
    delta = 2 if mode == "near-lossless" else None
    enc = banding_codec.encode(array, bits, mode=mode, max_error=delta)
    assert enc.version == FORMAT_VERSION
    out = banding_codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
    assert metrics.max_abs_error(array, out) <= (delta or 0)
    assert all(p.value_classes is None or len(p.value_classes) <= 7 for p in enc.planes)


def test_the_default_codec_uses_bands_where_they_pay_and_decodes_them(codec, rng):
    image = photon_image(rng, (256, 320)).astype(np.uint16)
    enc = codec.encode(image, 12)
    assert enc.version == FORMAT_VERSION and enc.planes[0].value_classes is not None
    plain = Codec(codec.model, dataclasses.replace(codec.config, band_min_pixels=1 << 40)).encode(image, 12)
    assert plain.planes[0].value_classes is None and enc.encoded_bytes < plain.encoded_bytes
    for threads in (1, 2):
        assert np.array_equal(codec.decode(EncodedImage.from_bytes(enc.to_bytes()), threads=threads), image)


def upsampled_image(rng, shape=(160, 192), bits=12):
    """A 2x bilinear upsample of a noisy image: every other pixel is its neighbours' average."""
    h, w = shape
    small = smooth_image(rng, (h // 2 + 1, w // 2 + 1), bits).astype(np.int64)
    small = np.clip(small + rng.integers(-30, 31, small.shape), 0, (1 << bits) - 1)
    up = np.zeros((h + 1, w + 1), dtype=np.int64)
    up[::2, ::2] = small
    up[1::2, ::2] = (up[:-2:2, ::2] + up[2::2, ::2]) // 2
    up[:, 1::2] = (up[:, :-2:2] + up[:, 2::2]) // 2
    return up[:h, :w]


def test_a_parity_fit_finds_interpolation_and_not_elsewhere(rng):
    _, interpolated = fit_parity_predictor(upsampled_image(rng))
    _, native = fit_parity_predictor(photon_image(rng))
    assert interpolated > 0.1 and native < 0.05


def test_the_codec_uses_parity_weights_on_interpolated_images_only(codec, rng):
    image = upsampled_image(rng).astype(np.uint16)
    enc = codec.encode(image, 12)
    assert enc.planes[0].linear is not None and enc.planes[0].linear.shape == (4, 10)
    assert np.array_equal(codec.decode(EncodedImage.from_bytes(enc.to_bytes())), image)
    v3 = codec.encode(image, 12, format_version=3)
    assert enc.encoded_bytes < 0.97 * v3.encoded_bytes
    native = codec.encode(photon_image(rng).astype(np.uint16), 12)
    assert native.planes[0].linear is None or native.planes[0].linear.ndim == 1


def test_parity_weights_round_trip_in_the_header_and_only_in_version_4():
    linear = np.arange(40, dtype=np.int64).reshape(4, 10) - 20
    head = _plane_header(ph.PlaneInfo(0, 4095, linear=linear))
    back, pos = ph._read_plane_info_v3(head, 0, ph.NUM_LINEAR_TAPS, 4)
    assert pos == len(head) and np.array_equal(back.linear, linear)
    with pytest.raises(CorruptStreamError, match="plane flags"):
        ph._read_plane_info_v3(head, 0, ph.NUM_LINEAR_TAPS, 3)
    lone = bytearray(head[:4])  # lo, hi, then the parity flag without the linear flag
    lone[3] = ph.PLANE_LINEAR_PARITY
    with pytest.raises(CorruptStreamError, match="plane flags"):
        ph._read_plane_info_v3(bytes(lone), 0, ph.NUM_LINEAR_TAPS, 4)


def test_guidance_must_save_its_minimum_share_of_the_trial_crop(rng):
    """trials.guidance_helps: a reconstruction equal to the plane saves most of the crop, so it
    passes any gate below that saving and fails one above it."""
    plane = smooth_image(rng, (64, 64), 12).astype(np.int64)
    info = ph.PlaneInfo(int(plane.min()), int(plane.max()))
    crop = (slice(0, 64), slice(0, 64))
    guided = trials.coded_size(plane, info, 0, V4_TABLES, plane, 8)
    unguided = trials.coded_size(plane, info, 0, V4_TABLES, None, 8)
    saving = 1 - guided / unguided
    assert saving > 0.1
    assert trials.guidance_helps(plane, plane, info, 0, V4_TABLES, crop, 8, min_gain=saving - 0.01)
    assert not trials.guidance_helps(plane, plane, info, 0, V4_TABLES, crop, 8, min_gain=saving + 0.01)


def test_the_guidance_gate_applies_to_format_4_only(codec):
    """CodecConfig.guidance_min_gain: at 1.0 no format-4 plane is guided (and the lossless decode
    then needs no latents); format 3's encoder keeps its released rule."""
    from pathlib import Path

    source = np.load(Path(__file__).parent / "golden" / "v4" / "u8_rgb_lossless.src.npy")
    assert any(p.guided for p in codec.encode(source, 8, format_version=4).planes)  # it pays by more than 1%
    strict = Codec(codec.model, dataclasses.replace(codec.config, guidance_min_gain=1.0))
    for version in (4, 5):  # format 5 keeps format 4's gate
        enc = strict.encode(source, 8, format_version=version)
        assert not any(p.guided for p in enc.planes)
        assert np.array_equal(strict.decode(EncodedImage.from_bytes(enc.to_bytes())), source)
    assert any(p.guided for p in strict.encode(source, 8, format_version=3).planes)


def test_linear_trial_crop_is_a_sixteenth_of_the_plane_within_128_to_256(codec):
    """The linear / remap trial crop: 1/16 of a plane's pixels, at least 128 and at most
    CodecConfig.linear_trial_size on a side (a 512^2 CT pays a quarter of its final pass for
    the trials; a large radiograph keeps the 256^2 crop its choices were measured on)."""
    from lowrank_batch.codec.codec import CodecConfig

    def side(shape):
        return np.zeros(shape, dtype=np.uint8)[codec._linear_trial_crop(shape)].shape

    assert side((512, 512)) == (128, 128)
    assert side((1955, 1841)) == (256, 256)
    assert side((1024, 1024)) == (256, 256)
    assert side((100, 90)) == (100, 90)  # smaller than the crop: the whole plane
    assert CodecConfig().linear_trial_size == 256


def test_format_5_trials_a_25th_of_the_plane_within_96_to_256(codec):
    """Format 5's trial crop (linear, remap and guidance alike): the 512^2 CT's is 102^2."""
    def side(shape):
        return np.zeros(shape, dtype=np.uint8)[codec._linear_trial_crop(shape, 5)].shape

    assert side((512, 512)) == (102, 102)
    assert side((1955, 1841)) == (256, 256)
    assert side((800, 800)) == (160, 160)
    assert side((90, 80)) == (90, 80)


def test_band_thresholds_from_one_sort_are_np_quantiles_lower(rng):
    """band_thresholds cuts a sorted sample where np.quantile(method="lower") does (the band
    choice, and so the bytes, must not depend on which way they are computed)."""
    from lowrank_batch.codec.plane_v4 import band_thresholds

    for _ in range(100):
        values = rng.integers(0, rng.integers(2, 5000), rng.integers(1, 3000))
        for bands in BAND_CANDIDATES:
            q = np.unique(np.asarray(np.quantile(values, np.arange(1, bands) / bands, method="lower"), dtype=np.int64))
            assert np.array_equal(band_thresholds(np.sort(values), bands), q[q > values.min()])


def _static_bits_alone(buckets, values, thresholds, tokens, num_buckets):
    """The band screen's estimate for one band choice, counted on its own (numpy)."""
    from lowrank_batch.codec import band_kernels as bk

    banded = buckets.astype(np.int64) * (thresholds.size + 1) + np.searchsorted(thresholds, values, side="right")
    hist = np.bincount(banded * cm.NUM_TOKENS + tokens, minlength=num_buckets * (thresholds.size + 1) * cm.NUM_TOKENS)
    cost = 0
    for row in hist.reshape(-1, cm.NUM_TOKENS):
        used = row[row > 0]
        if used.size:
            n = int(used.sum())
            log_n = int(bk._log2_fixed(n, bk.LOG2_TABLE))
            cost += n * log_n + ((used.size - 1) * log_n >> 1)
            cost -= sum(int(h) * int(bk._log2_fixed(int(h), bk.LOG2_TABLE)) for h in used)
    return cost


def test_the_band_screen_counts_every_choice_as_if_alone(rng):
    """plane_v4._bands_may_pay counts all band choices in one pass over an edge band per
    threshold of any choice: each choice's estimate must be the one it gets counted alone,
    for nested choices (the encoder's quantiles) and for choices that share no threshold."""
    from lowrank_batch.codec import band_kernels as bk

    num_buckets = 12
    for _ in range(20):
        n = int(rng.integers(1, 4000))
        buckets = rng.integers(0, num_buckets, n).astype(np.uint8)
        tokens = rng.integers(0, int(rng.integers(1, cm.NUM_TOKENS)), n).astype(np.uint8)
        values = rng.integers(-50, 3000, n)
        choices = [np.sort(rng.choice(np.arange(-40, 3000), int(k), replace=False)).astype(np.int64)
                   for k in rng.integers(1, 8, 3)]
        edges = np.unique(np.concatenate(choices))
        lower = np.concatenate(([np.iinfo(np.int64).min], edges))
        maps = np.array([np.zeros(edges.size + 1, dtype=np.int64)]
                        + [np.searchsorted(t, lower, side="right") for t in choices], dtype=np.int64)
        got = bk._static_bits_by_bands(buckets, values, edges, maps, tokens, num_buckets, cm.NUM_TOKENS, bk.LOG2_TABLE)
        want = [_static_bits_alone(buckets, values, t, tokens, num_buckets)
                for t in [np.zeros(0, dtype=np.int64), *choices]]
        assert got.tolist() == want


@pytest.mark.parametrize("interpolated", [False, True])
def test_the_linear_trial_reports_the_crop_size_of_its_choice(rng, interpolated):
    """trials.fitted_linear_predictor's second answer is the crop coded as it chose (the
    guidance trial takes it for its unguided side instead of coding the crop again)."""
    from lowrank_batch.codec.linear_fit import as_class_table

    plane = photon_image(rng, (96, 96))
    if interpolated:  # every other column an average of its neighbours: one weight set per parity pays
        plane[:, 1:-1:2] = (plane[:, :-2:2] + plane[:, 2::2]) // 2
    info = ph.PlaneInfo(0, 4095)
    crop = trials.trial_crop(plane.shape, 64, 8)
    weights, size = trials.fitted_linear_predictor(plane, info, 0, crop, None, V4_TABLES, parity=True)
    if interpolated:
        assert weights is not None and weights.ndim == 2
    tables = V4_TABLES
    if weights is not None:
        tables = dataclasses.replace(V4_TABLES, lin=weights if weights.ndim == 2 else as_class_table(weights))
    assert size == trials.coded_size(plane[crop], info, 0, tables)
    # a flat plane fits no weights and codes no crop: nothing to report
    flat = np.full((64, 64), 7, dtype=np.int64)
    assert trials.fitted_linear_predictor(flat, ph.PlaneInfo(0, 15), 0, crop, None, V4_TABLES) == (None, None)


def test_guidance_given_the_unguided_size_decides_on_it(rng):
    plane = smooth_image(rng, (64, 64), 12).astype(np.int64)
    info = ph.PlaneInfo(int(plane.min()), int(plane.max()))
    crop = (slice(0, 64), slice(0, 64))
    unguided = trials.coded_size(plane, info, 0, V4_TABLES, None, 8)
    guided = trials.coded_size(plane, info, 0, V4_TABLES, plane, 8)
    assert trials.guidance_helps(plane, plane, info, 0, V4_TABLES, crop, 8, 0.0, unguided)
    assert not trials.guidance_helps(plane, plane, info, 0, V4_TABLES, crop, 8, 0.0, guided)  # no saving


def test_fewer_preview_components_at_the_same_step_are_the_first_latents(codec, rng):
    """The preview budget takes a rank-2 preview's latents from the rank-3 ones at the same
    step instead of projecting again: they must be the same numbers."""
    planes = smooth_image(rng, (96, 80), 12).astype(np.int64)[None]
    maxval, step = 4095, 300 / 4095
    three = codec._project(planes, maxval, 3, step, 0.0)
    assert np.array_equal(three[..., :2], codec._project(planes, maxval, 2, step, 0.0))
    assert np.array_equal(three[..., :1], codec._project(planes, maxval, 1, step, 0.0))
