"""The causal context coder alone: exact round trips, the near-lossless bound, odd shapes."""

import numpy as np
import pytest

from lowrank_batch.codec.residual_coder import decode_plane, encode_plane
from lowrank_batch.errors import CorruptStreamError


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2), (3, 50), (64, 5), (33, 47)])
def test_lossless_round_trip_odd_shapes(rng, shape):
    plane = rng.integers(0, 4096, shape)
    blob, recon = encode_plane(plane, 0, 4095)
    assert np.array_equal(recon, plane)
    assert np.array_equal(decode_plane(blob, *shape, 0, 4095), plane)


def test_lossless_with_side_information(rng):
    yy, xx = np.mgrid[0:64, 0:80]
    plane = (1000 + 500 * np.sin(xx / 9) + rng.normal(0, 3, xx.shape)).astype(np.int64)
    side = (1000 + 500 * np.sin(xx / 9)).astype(np.int64)
    blob, _ = encode_plane(plane, 0, 4095, side=side)
    assert np.array_equal(decode_plane(blob, 64, 80, 0, 4095, side=side), plane)
    plain, _ = encode_plane(plane, 0, 4095)
    assert np.array_equal(decode_plane(plain, 64, 80, 0, 4095), plane)


def test_side_information_must_match(rng):
    plane = rng.integers(0, 256, (20, 20))
    side = rng.integers(0, 256, (20, 20))
    blob, _ = encode_plane(plane, 0, 255, side=side)
    other = side.copy()
    other[5, 5] += 7
    try:
        decoded = decode_plane(blob, 20, 20, 0, 255, side=other)
    except CorruptStreamError:
        return
    assert not np.array_equal(decoded, plane)


@pytest.mark.parametrize("delta", [1, 2, 4, 7])
def test_near_lossless_bound_every_pixel(rng, delta):
    plane = rng.integers(0, 1024, (40, 37))
    blob, recon = encode_plane(plane, 0, 1023, delta)
    decoded = decode_plane(blob, 40, 37, 0, 1023, delta)
    assert np.array_equal(decoded, recon)
    assert np.abs(decoded - plane).max() <= delta
    assert decoded.min() >= 0 and decoded.max() <= 1023


def test_extreme_values_and_negative_ranges(rng):
    plane = rng.choice([-65535, 65535, 0, 1, -1], size=(30, 30))
    blob, _ = encode_plane(plane, -65535, 65535)
    assert np.array_equal(decode_plane(blob, 30, 30, -65535, 65535), plane)


def test_constant_plane_is_tiny():
    plane = np.full((256, 256), 77)
    blob, _ = encode_plane(plane, 0, 255)
    assert len(blob) < 200
    assert np.array_equal(decode_plane(blob, 256, 256, 0, 255), plane)


def test_truncated_stream_is_a_clear_error(rng):
    plane = rng.integers(0, 4096, (32, 32))
    blob, _ = encode_plane(plane, 0, 4095)
    for cut in (0, 3, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptStreamError):
            decode_plane(blob[:cut], 32, 32, 0, 4095)


def test_value_tables_match_the_searches_they_replace(rng):
    """planes.value_index / nearest_index answer from tables over the values' span; they must
    give np.searchsorted's answers (and the nearest rule's, ties upward) for any integer,
    inside or outside the span, or remapped planes would decode differently."""
    from lowrank_batch.codec import planes

    for _ in range(200):
        values = np.unique(rng.integers(-100, 3000, rng.integers(1, 60))).astype(np.int64)
        x = rng.integers(-400, 3400, 4000).astype(np.int64)
        assert np.array_equal(planes.nearest_index(values, x), planes._nearest_index_search(values, x))
        present = rng.choice(values, 500)
        assert np.array_equal(planes.value_index(values, present), np.searchsorted(values, present))


def test_value_tables_fall_back_to_the_search_for_huge_or_invalid_spans():
    """A damaged or hostile header can hold remap values spanning 2**40 (formats 1-2 store the
    gaps as unbounded varints) or repeated values: the decoder's side information must then
    come from the search, not from a table the size of the span (8 TiB)."""
    from lowrank_batch.codec import planes

    huge = np.array([0, 1 << 40], dtype=np.int64)
    x = np.array([5, -3, (1 << 40) - 5, 1 << 41], dtype=np.int64)
    assert np.array_equal(planes.nearest_index(huge, x), planes._nearest_index_search(huge, x))
    assert np.array_equal(planes.value_index(huge, huge), [0, 1])
    repeated = np.array([10, 10, 20], dtype=np.int64)
    x = np.arange(0, 30, dtype=np.int64)
    assert np.array_equal(planes.nearest_index(repeated, x), planes._nearest_index_search(repeated, x))
