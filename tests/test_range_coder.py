"""The numba range coder against constriction 0.5.0, its reference: the same words for the same
symbols and models, constriction's streams decode, and corrupt streams fail cleanly."""

import constriction
import numba
import numpy as np
import pytest

from lowrank_batch.codec import context_model as cm
from lowrank_batch.codec import plane_kernels as pk
from lowrank_batch.codec import range_coder as rc
from lowrank_batch.codec.residual_coder import (
    SHARED_STREAM_MAX_RUNS,
    V1_TABLES,
    V3_TABLES,
    _parse_plane_stream,
    decode_plane,
    encode_plane,
    model_pass,
)
from lowrank_batch.codec.stream_order import count_runs, order_for_single_stream
from lowrank_batch.errors import CorruptStreamError


def _constriction_model(counts):
    return constriction.stream.model.Categorical(np.asarray(counts).astype(np.float64), perfect=False)


def _constriction_words(symbols, model_ids, counts) -> np.ndarray:
    """One RangeEncoder, one call per run of equal model (as the codec called it before)."""
    encoder = constriction.stream.queue.RangeEncoder()
    models = {}
    cuts = np.flatnonzero(np.diff(model_ids)) + 1 if len(symbols) else []
    for run in np.split(np.arange(len(symbols)), cuts):
        if run.size:
            i = int(model_ids[run[0]])
            models.setdefault(i, _constriction_model(counts[i]))
            encoder.encode(np.asarray(symbols)[run].astype(np.int32), models[i])
    return encoder.get_compressed()


def _histograms(rng, kind: str, num_models: int, num_tokens: int) -> np.ndarray:
    if kind == "dominant":  # one symbol near COUNT_LIMIT, the rest at 1: the inverted situation
        counts = np.ones((num_models, num_tokens), dtype=np.int64)
        counts[np.arange(num_models), rng.integers(0, num_tokens, num_models)] = cm.COUNT_LIMIT
        return counts
    if kind == "ones":
        return np.ones((num_models, num_tokens), dtype=np.int64)
    if kind == "large":  # counts as large as the model lets them grow
        return rng.integers(cm.COUNT_LIMIT // 2, cm.COUNT_LIMIT + cm.COUNT_INCREMENT, (num_models, num_tokens))
    return rng.integers(1, 1000, (num_models, num_tokens)) ** 2 // 1000 + 1  # skewed


def _sample(rng, counts, model_ids):
    p = counts / counts.sum(axis=1, keepdims=True)
    symbols = np.array([rng.choice(counts.shape[1], p=p[i]) for i in model_ids], dtype=np.int64)
    rare = rng.random(len(symbols)) < 0.05  # and some improbable ones
    symbols[rare] = rng.integers(0, counts.shape[1], int(rare.sum()))
    return symbols


@pytest.mark.parametrize("kind", ["dominant", "ones", "large", "skewed"])
def test_same_words_as_constriction_and_decodes_its_streams(rng, kind):
    for _ in range(12):
        num_models, num_tokens = int(rng.integers(1, 5)), int(rng.choice([2, 3, 17, cm.NUM_TOKENS]))
        counts = _histograms(rng, kind, num_models, num_tokens)
        n = int(rng.choice([0, 1, 2, 50, 2000]))
        model_ids = np.sort(rng.integers(0, num_models, n)) if rng.random() < 0.5 else rng.integers(0, num_models, n)
        symbols = _sample(rng, counts, model_ids)
        expected = _constriction_words(symbols, model_ids, counts)

        cdfs = np.empty((num_models, num_tokens + 1), dtype=np.uint32)
        rc.quantise_rows(counts, cdfs)
        words = np.zeros(rc.word_capacity(n), dtype=np.uint32)
        length = rc.encode_sequence(symbols, model_ids, cdfs, words, 0, words.size)
        assert np.array_equal(words[:length], expected)

        decoded = np.empty(n, dtype=np.int64)
        assert rc.decode_sequence(expected.astype(np.uint32), model_ids, cdfs, decoded) == rc.OK
        assert np.array_equal(decoded, symbols)


def test_reading_past_the_end_decodes_like_constriction(rng):
    counts = rng.integers(1, 50, (1, 20))
    words = rng.integers(0, 1 << 32, 3, dtype=np.uint64).astype(np.uint32)
    expected = constriction.stream.queue.RangeDecoder(words).decode(_constriction_model(counts[0]), 40)
    cdfs = np.empty((1, 21), dtype=np.uint32)
    rc.quantise_rows(counts, cdfs)
    decoded = np.empty(40, dtype=np.int64)
    assert rc.decode_sequence(words, np.zeros(40, dtype=np.int64), cdfs, decoded) == rc.OK
    assert np.array_equal(decoded, expected)


def test_invalid_data_is_flagged_where_constriction_raises():
    counts = np.array([[1, 2, 3, 100]])
    words = np.full(3, 0xFFFFFFFF, dtype=np.uint32)
    with pytest.raises(AssertionError):  # constriction's InvalidData
        constriction.stream.queue.RangeDecoder(words).decode(_constriction_model(counts[0]), 10)
    cdfs = np.empty((1, 5), dtype=np.uint32)
    rc.quantise_rows(counts, cdfs)
    assert rc.decode_sequence(words, np.zeros(10, dtype=np.int64), cdfs, np.empty(10, dtype=np.int64)) == rc.ERR_INVALID


def _plane_symbols(plane, lo, hi):
    """The context model's pass over a plane: per-pixel bucket, token, snapshot and the snapshots."""
    mp = model_pass(plane, lo, hi, 0, None, 8, V3_TABLES)  # format 3's model
    return mp.buckets, mp.tokens, mp.snaps, mp.snapshots


def test_real_plane_streams_match_constriction(rng):
    yy, xx = np.mgrid[0:96, 0:120]
    plane = (2000 + 900 * np.sin(xx / 11) * np.cos(yy / 7) + rng.normal(0, 6, xx.shape)).astype(np.int64)
    plane[40:60, 30:90] = 0  # a flat background patch: dominant-symbol histograms
    buckets, tokens, snaps, snapshots = _plane_symbols(plane, 0, 4095)
    cdfs = np.empty((len(snapshots), cm.NUM_TOKENS + 1), dtype=np.uint32)
    rc.quantise_rows(snapshots, cdfs)

    words, bases, lengths, status = pk._code_bucket_streams(buckets, tokens, snaps, cdfs, cm.NUM_BUCKETS)
    assert status == rc.OK
    for b in range(cm.NUM_BUCKETS):
        mine = buckets == b
        expected = _constriction_words(tokens[mine], snaps[mine], snapshots)
        assert np.array_equal(words[bases[b] : bases[b] + lengths[b]], expected)

    assert count_runs(buckets, *plane.shape, cm.NUM_BUCKETS) <= SHARED_STREAM_MAX_RUNS
    shared, length = pk._code_shared_stream(buckets, tokens, snaps, cdfs, *plane.shape, cm.NUM_BUCKETS)
    ordered_tokens, ordered_snaps, _ = order_for_single_stream(buckets, tokens, snaps, *plane.shape, cm.NUM_BUCKETS)
    assert np.array_equal(shared[:length], _constriction_words(ordered_tokens, ordered_snaps, snapshots))


@pytest.mark.parametrize("shape", [(12, 12), (200, 200)])  # the shared stream and per-bucket streams
def test_garbage_words_are_a_corrupt_stream(rng, shape):
    plane = rng.integers(0, 4096, shape)
    blob, _ = encode_plane(plane, 0, 4095)
    num_bits, words, _, _, _ = _parse_plane_stream(blob, V1_TABLES, *shape)
    words_end = len(blob) - 8 * ((num_bits + 63) // 64)
    damaged = bytearray(blob)
    damaged[words_end - 4 * len(words) : words_end] = b"\xff" * (4 * len(words))  # every coder word all ones
    with pytest.raises(CorruptStreamError):
        decode_plane(bytes(damaged), *shape, 0, 4095)


def test_random_damage_never_crashes(rng):
    plane = rng.integers(0, 4096, (40, 40))
    blob, _ = encode_plane(plane, 0, 4095)
    for _ in range(200):
        damaged = bytearray(blob)
        for pos in rng.integers(0, len(blob), int(rng.integers(1, 4))):
            damaged[pos] ^= int(rng.integers(1, 256))
        try:
            out = decode_plane(bytes(damaged), 40, 40, 0, 4095)
        except CorruptStreamError:
            continue
        assert out.shape == (40, 40)


@numba.njit(cache=False)
def _decode_both_ways(words, cdfs, cdf_ids, slots):
    """Decode the same stream with decode_symbol (binary search) and decode_symbol_slotted."""
    num_symbols = cdfs.shape[1] - 1
    a = np.empty((1, 5), dtype=np.uint64)
    b = np.empty((1, 5), dtype=np.uint64)
    rc.decoder_init(words, 0, words.shape[0], a, 0)
    rc.decoder_init(words, 0, words.shape[0], b, 0)
    out = np.empty((cdf_ids.shape[0], 2), dtype=np.int64)
    for k in range(cdf_ids.shape[0]):
        out[k, 0] = rc.decode_symbol(cdfs, cdf_ids[k], num_symbols, words, a, 0)
        out[k, 1] = rc.decode_symbol_slotted(cdfs, slots, cdf_ids[k], num_symbols, words, b, 0)
    return out, a, b


def test_slotted_symbol_search_finds_the_binary_searchs_symbol(rng):
    """The plane decoder finds symbols from a slot table (fill_slots); on any stream, even
    random words, and any models (flat, peaked, many tiny symbols) it must decode exactly what
    the binary search decodes, and leave the same state."""
    for trial in range(20):
        n = int(rng.integers(2, 200))
        counts = np.ones((6, n), dtype=np.int64)
        counts[0] = rng.integers(1, 1000, n)
        counts[1, rng.integers(0, n)] = 1 << 20  # one symbol takes almost everything
        counts[2] = rng.geometric(0.05, n)
        counts[3, : n // 2] = 1 << 12  # a cliff
        counts[4] = rng.integers(1, 3, n)
        cdfs = np.empty((6, n + 1), dtype=np.uint32)
        rc.quantise_rows(counts, cdfs)
        slots = np.empty((6, 1 << rc.SLOT_BITS), dtype=np.uint8)
        for r in range(6):
            rc.fill_slots(cdfs, r, slots)
        ids = rng.integers(0, 6, 3000)
        symbols = np.array([rng.choice(n, p=counts[i] / counts[i].sum()) for i in ids], dtype=np.int64)
        words = np.empty(rc.word_capacity(len(symbols)), dtype=np.uint32)
        length = rc.encode_sequence(symbols, ids, cdfs, words, 0, len(words))
        for stream in (words[:length], rng.integers(0, 1 << 32, 500, dtype=np.uint64).astype(np.uint32)):
            out, a, b = _decode_both_ways(stream, cdfs, ids, slots)
            assert np.array_equal(out[:, 0], out[:, 1]), trial
            assert np.array_equal(a, b)
        assert np.array_equal(_decode_both_ways(words[:length], cdfs, ids, slots)[0][:, 0], symbols)


def test_slots_hold_the_last_symbol_at_or_below_each_slot_start(rng):
    """fill_slots by its definition: slot k holds the last symbol whose cdf entry is <= k * 2**(24 - SLOT_BITS)."""
    for n in (2, 3, 16, 104, 300):
        counts = np.stack([rng.integers(1, 1000, n), np.ones(n, dtype=np.int64), rng.geometric(0.02, n),
                           np.where(np.arange(n) == n // 2, 1 << 30, 1)]).astype(np.int64)
        cdfs = np.empty((len(counts), n + 1), dtype=np.uint32)
        rc.quantise_rows(counts, cdfs)
        slots = np.empty((len(counts), 1 << rc.SLOT_BITS), dtype=np.uint8 if n <= 256 else np.int64)
        starts = np.arange(1 << rc.SLOT_BITS, dtype=np.int64) << (rc.PRECISION - rc.SLOT_BITS)
        for r in range(len(counts)):
            rc.fill_slots(cdfs, r, slots)
            expected = np.searchsorted(cdfs[r, :n].astype(np.int64), starts, side="right") - 1
            assert np.array_equal(slots[r], expected), (n, r)
