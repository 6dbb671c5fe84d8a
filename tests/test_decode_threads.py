"""Decoding one image on several threads (its planes, and the strips of a plane): the same
pixels for any thread count, and the knob refuses nonsense."""

import numpy as np
import pytest

from lowrank_batch import EncodedImage
from lowrank_batch.codec.residual_coder import V3_TABLES, decode_plane_strips, encode_plane_strips, split_strips
from lowrank_batch.codec.threads import resolve_threads, run_all
from lowrank_batch.errors import CorruptStreamError, InvalidParameterError

from .conftest import smooth_image


@pytest.mark.parametrize("mode, max_error", [("lossless", None), ("near-lossless", 2)])
def test_colour_planes_decode_the_same_on_any_thread_count(codec, rng, mode, max_error):
    array = smooth_image(rng, (48, 40, 3), 8)
    blob = codec.encode(array, 8, mode=mode, max_error=max_error).to_bytes()
    outs = [codec.decode(EncodedImage.from_bytes(blob), threads=n) for n in (1, 2, 3, None)]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
    if mode == "lossless":
        assert np.array_equal(outs[0], array)


def test_threads_knob_refuses_nonsense(codec, rng):
    enc = codec.encode(smooth_image(rng, (16, 16), 12), 12)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidParameterError, match="threads"):
            codec.decode(enc, threads=bad)
    assert resolve_threads(None) >= 1


def test_a_failing_piece_fails_the_decode_after_the_others_finish():
    done = []

    def ok(k):
        return lambda: done.append(k) or k

    def bad():
        raise CorruptStreamError("piece 1 is damaged")

    with pytest.raises(CorruptStreamError, match="piece 1"):
        run_all([ok(0), bad, ok(2), ok(3)], threads=2)
    assert sorted(done) == [0, 2, 3]
    assert run_all([ok(k) for k in range(5)], threads=3) == list(range(5))


@pytest.mark.parametrize("guided", [False, True])
def test_strips_code_and_decode_the_same_on_any_thread_count(rng, guided):
    plane = smooth_image(rng, (200, 72), 12).astype(np.int64)
    side = (plane // 16 * 16) if guided else None
    blob, values = encode_plane_strips(plane, 0, 4095, 0, side, 8, V3_TABLES, strips=4, threads=1)
    assert encode_plane_strips(plane, 0, 4095, 0, side, 8, V3_TABLES, strips=4, threads=3)[0] == blob
    assert len(split_strips(blob, 200, 8)) == 4
    for n in (1, 2, 4, None):
        assert np.array_equal(decode_plane_strips(blob, 200, 72, 0, 4095, 0, side, 8, V3_TABLES, threads=n), plane)


def test_a_damaged_strip_is_a_corrupt_stream_on_any_thread_count(rng):
    plane = smooth_image(rng, (128, 40), 12).astype(np.int64)
    blob, _ = encode_plane_strips(plane, 0, 4095, strips=2)
    damaged = blob[:-9] + bytes(9)  # the last strip's tail
    for n in (1, 2):
        try:
            out = decode_plane_strips(damaged, 128, 40, 0, 4095, threads=n)
        except CorruptStreamError:
            continue
        assert not np.array_equal(out, plane)


def test_default_thread_count_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert resolve_threads(None) >= 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= resolve_threads(None) <= 8
    assert resolve_threads(3) == 3  # an explicit count is used as given
