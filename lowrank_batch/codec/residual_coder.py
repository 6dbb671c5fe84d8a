"""Lossless / near-lossless coding of one integer plane with the causal context model.

The context model (numba, `context_model.py`) decides for every pixel a bucket and a token;
a range coder codes the tokens, one independent stream per bucket, with the bucket's adaptive
histogram snapshot as a categorical model: constriction's queue range coder and its
`Categorical(perfect=False)` model, re-implemented in numba (`range_coder.py`, same words) so
that a whole plane codes and decodes in one compiled call. Raw low bits of large values
are packed as they are (they are close to uniform, as in JPEG XL's hybrid integers).

Plane stream layout (all little-endian):
    varint number of raw bits
    u8     layout: 0 = one range-coder stream per bucket, 1 = one shared stream
    layout 0: bitmask of the buckets in use (NUM_BUCKETS bits), then per bucket in use a varint
              number of 32-bit words, then the bucket streams in bucket order (u32 words)
    layout 1: varint number of 32-bit words, then the stream; symbols in (wavefront, bucket,
              row) order, the order the decoder fetches them
    the raw bits (u64 words)

Per-bucket streams cost one coder flush per bucket; small planes use the shared stream, which
saves those flushes. Which layout a plane gets is decided as when constriction was called
from Python (a run limit, then the smaller), so re-encoding gives the same bytes as before.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptStreamError, InvalidParameterError
from . import band_kernels as bk
from . import blend
from . import context_model as cm
from . import plane_kernels as pk
from . import range_coder as rc
from .stream_order import count_runs
from .threads import run_all
from .varint import read_varint, write_varint

NO_THRESHOLDS = np.zeros(0, dtype=np.int64)
SHARED_STREAM_MAX_RUNS = 4000  # above this many (wavefront, bucket) runs: per-bucket streams (fixed: same bytes)


@dataclass(frozen=True)
class ContextTables:
    """What maps the model's context to a histogram, and the histograms' starting counts.

    Format 1: the 80 activity buckets with a geometric prior (nx = 1, identity table).
    Format 2: a finer context (activity bucket x NUM_EXTRA classes) mapped to trained buckets
    by `lut`, each starting from trained integer counts (`prior`), from the coder model file.
    Format 3: format 1's buckets with bias cancellation and a per-plane fitted linear predictor.
    Format 4: format 3 plus flat-neighbourhood buckets, per-plane intensity bands and one
    range-coder stream per strip in coding order.
    Format 5: format 4 with each plane's predictor weights and histograms refreshed more often.
    Format 6: format 5, and a plane with linear weights per position parity has histograms and
    bias corrections per parity too (`nx` = cm.PARITY_CONTEXT: with_parity_context).
    """

    lut: np.ndarray  # int64 (fine contexts,) -> bucket
    nx: int  # extra classes per activity bucket (1: none; cm.PARITY_CONTEXT: one per position parity)
    prior: np.ndarray  # int64 (buckets, NUM_TOKENS), every count >= 1
    # int64: the plane's fitted linear predictor, (LIN_CLASSES, taps) weight sets by activity or
    # (format 4) (LIN_PARITY_CLASSES, taps) by position parity; none: (0, taps)
    lin: np.ndarray = field(default_factory=lambda: cm.NO_LINEAR)
    bias: bool = False  # format 3: bias cancellation (context_model._cancel_bias)
    # format 4: intensity band thresholds (context_model._value_class; empty: one band), and
    # the plane stream as one range-coder stream in coding order (layout 2)
    value_thresholds: np.ndarray = field(default_factory=lambda: NO_THRESHOLDS)
    in_order: bool = False
    flat_mode: bool = False  # format 4: flat neighbourhoods predict W, in buckets of their own
    # the blend's weight table by role (blend.weight_table); format 5: the plane's predictor weights
    weight_table: np.ndarray = field(default_factory=lambda: blend.DEFAULT_WEIGHT_TABLE)
    refresh: tuple[int, int] = (cm.MIN_SEGMENT, cm.REFRESH_SHIFT)  # format 5: cm.V5_REFRESH

    @property
    def num_buckets(self) -> int:
        return self.prior.shape[0]

    @property
    def mask_bytes(self) -> int:
        return (self.num_buckets + 7) // 8


V1_TABLES = ContextTables(cm.V1_LUT, 1, cm._PRIOR)
V3_TABLES = ContextTables(cm.V1_LUT, 1, cm._PRIOR, bias=True)  # + each plane's linear predictor, if any
# format 4: buckets NUM_BUCKETS.. are flat neighbourhoods' (context_model._predict), with the same priors
V4_TABLES = ContextTables(np.arange(2 * cm.NUM_BUCKETS, dtype=np.int64), 1, np.concatenate((cm._PRIOR, cm._PRIOR)),
                          bias=True, in_order=True, flat_mode=True)  # + each plane's linear predictor and bands
V5_TABLES = dataclasses.replace(V4_TABLES, weight_table=blend.weight_table(blend.TRAINED_PREDICTOR_WEIGHTS),
                                refresh=cm.V5_REFRESH)  # + each plane's own weights, if it has them


def with_value_classes(tables: ContextTables, thresholds: np.ndarray | None) -> ContextTables:
    """Format 4: `tables` with the plane's intensity bands; each activity bucket becomes one
    bucket per band, all starting from that activity bucket's prior."""
    if thresholds is None or len(thresholds) == 0:
        return tables
    # the banded lut is the identity: bands apply to format 4's tables only (no finer format-2
    # context, no trained bucket map), where lut[bucket] == bucket
    assert tables.nx in (1, cm.PARITY_CONTEXT) and np.array_equal(tables.lut, np.arange(tables.num_buckets)), \
        "bands need identity tables"
    bands = len(thresholds) + 1
    return dataclasses.replace(tables, lut=np.arange(tables.num_buckets * bands, dtype=np.int64),
                               prior=np.repeat(tables.prior, bands, axis=0),
                               value_thresholds=np.asarray(thresholds, dtype=np.int64))


def with_parity_context(tables: ContextTables) -> ContextTables:
    """Format 6: `tables` (format 4-5's, identity map) with one bucket per activity bucket and
    position parity, bucket * 4 + (row parity * 2 + column parity), each starting from its
    activity bucket's prior."""
    assert tables.nx == 1 and not tables.value_thresholds.size, "parity splits format 4+'s plain tables"
    assert np.array_equal(tables.lut, np.arange(tables.num_buckets)), "parity needs identity tables"
    buckets = tables.num_buckets * cm.LIN_PARITY_CLASSES
    return dataclasses.replace(tables, lut=np.arange(buckets, dtype=np.int64), nx=cm.PARITY_CONTEXT,
                               prior=np.repeat(tables.prior, cm.LIN_PARITY_CLASSES, axis=0))


def activity_levels(buckets: np.ndarray, tables: ContextTables) -> np.ndarray:
    """Each pixel's activity level (0: perfectly flat neighbours) from its bucket in `tables`
    before intensity bands: the bucket itself, or (format 6) the bucket of its parity split."""
    if tables.nx == cm.PARITY_CONTEXT:
        buckets = buckets // cm.LIN_PARITY_CLASSES
    return buckets % cm.NUM_LEVELS


@dataclass
class ModelPass:
    """The encoder's model pass over one plane (or strip), before entropy coding: per pixel in
    coding order its bucket, token and histogram snapshot; the snapshots; the raw low bits."""

    shape: tuple[int, int]
    buckets: np.ndarray
    tokens: np.ndarray  # uint8 (< NUM_TOKENS)
    snaps: np.ndarray  # int32 (< max_snapshots)
    snapshots: np.ndarray  # (snapshots used, NUM_TOKENS) int64 counts
    raw_words: np.ndarray  # uint64, LSB first
    num_bits: int
    values: np.ndarray  # what the decoder will reconstruct (the plane itself when lossless)


def model_pass(plane: np.ndarray, lo: int, hi: int, delta: int, side: np.ndarray | None, patch: int,
               tables: ContextTables) -> ModelPass:
    """Run the context model over `plane` (encoder side). Format 4's intensity bands are left
    out here: `with_bands` adds them (the predictions and tokens do not depend on them). Given
    banded tables, this pass's buckets are the unbanded ones and its snapshots start from the
    wrong priors: only `with_bands(model_pass(...), tables)` is a valid pass for them."""
    if not 0 <= hi - lo <= cm.MAX_SPAN:
        raise InvalidParameterError(f"plane value range [{lo}, {hi}] is wider than the coder's 2**24")
    tables = dataclasses.replace(tables, value_thresholds=NO_THRESHOLDS) if tables.value_thresholds.size else tables
    x = np.ascontiguousarray(plane, dtype=np.int64)
    n = x.size
    nb = tables.num_buckets
    st = cm.ModelState(*x.shape, side, patch, tables.prior, tables.bias, tables.refresh, tables.nx == cm.PARITY_CONTEXT)
    # per-pixel outputs in the smallest types that hold them: large scans stay small
    out_bucket = np.empty(n, dtype=np.uint8 if nb <= 256 else np.uint16)  # format 6's parity: up to 640
    out_token = np.empty(n, dtype=np.uint8)  # < NUM_TOKENS = 104
    # snapshot ids: int32, since format 4's banded tables (up to 1,280 buckets) can pass 2**15
    out_snap = np.empty(n, dtype=np.int32)
    snapshots = np.empty((max_snapshots(n, nb, tables.refresh), cm.NUM_TOKENS), dtype=np.int64)
    raw_words = np.zeros(n * 17 // 64 + 2, dtype=np.uint64)
    values = x.astype(np.int32) if delta == 0 else np.empty(x.shape, dtype=np.int32)  # lossless: the kernel leaves it
    by_position = blend.blend_table(tables.weight_table, side is not None, tables.lin.shape[0] > 0)
    num_snap, num_bits = pk._encode_plane(
        x, lo, hi, delta, st.xr, st.side, st.has_side, st.patch_mask, st.te, st.perr, st.counts, st.totals, st.snap,
        st.since, st.coded, st.epoch, st.refresh, st.refreshed, by_position,
        out_bucket, out_token, out_snap, snapshots, raw_words, values, tables.lut, tables.nx, tables.lin,
        tables.value_thresholds, tables.flat_mode, *st.bias_state(),
    )
    return ModelPass(x.shape, out_bucket, out_token, out_snap, snapshots[:num_snap], raw_words, int(num_bits), values)


def band_buckets(mp: ModelPass, thresholds: np.ndarray) -> np.ndarray:
    """Format 4: each pixel's bucket once the plane's intensity bands split every activity
    bucket (bucket * bands + band, as context_model._predict computes it)."""
    return bk._banded(mp.buckets, bk._band_values(mp.values), np.asarray(thresholds, dtype=np.int64))


def histogram_pass(mp: ModelPass, buckets: np.ndarray, tables: ContextTables) -> tuple[ModelPass, int]:
    """`mp` with its pixels in `buckets` (of `tables`): new snapshots, and the tokens' cost under
    them (bits, in units of 2**-16: an integer, so the encoder's choices are the same anywhere)."""
    nb = tables.num_buckets
    st = cm.ModelState(*mp.shape, None, 8, tables.prior, False, tables.refresh)
    snaps = np.empty(buckets.size, dtype=np.int32)
    snapshots = np.empty((max_snapshots(buckets.size, nb, tables.refresh), cm.NUM_TOKENS), dtype=np.int64)
    num_snap, cost = bk._histogram_pass(np.ascontiguousarray(buckets, dtype=np.int64), mp.tokens, *mp.shape, st.counts,
                                        st.totals, st.snap, st.since, st.coded, st.epoch, st.refresh, snaps, snapshots,
                                        bk.LOG2_TABLE)
    return dataclasses.replace(mp, buckets=buckets, snaps=snaps, snapshots=snapshots[:num_snap]), int(cost)


def with_bands(mp: ModelPass, tables: ContextTables) -> ModelPass:
    """Format 4: the model pass of a plane coded with `tables`' intensity bands."""
    if not tables.value_thresholds.size:
        return mp
    return histogram_pass(mp, band_buckets(mp, tables.value_thresholds), tables)[0]


def encode_plane(
    plane: np.ndarray, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None, patch: int = 8,
    tables: ContextTables = V1_TABLES,
) -> tuple[bytes, np.ndarray]:
    """Code `plane` (integers in [lo, hi]); `delta` > 0 allows that much error per pixel.

    `side` is the integer low-rank reconstruction (same shape, built from `patch` x `patch`
    blocks) that guides prediction; the decoder must be given the identical array. Returns the
    stream and what the decoder will reconstruct from it (the plane itself when delta is 0).
    """
    mp = model_pass(plane, lo, hi, delta, side, patch, tables)
    if tables.in_order:
        return in_order_stream(with_bands(mp, tables)), mp.values
    return _bucketed_stream(mp, tables), mp.values


def _cdfs(mp: ModelPass) -> np.ndarray:
    cdfs = np.empty((len(mp.snapshots), cm.NUM_TOKENS + 1), dtype=np.uint32)
    rc.quantise_rows(mp.snapshots, cdfs)
    return cdfs


def in_order_stream(mp: ModelPass) -> bytes:
    """Format 4's plane stream (layout 2): varint raw bits, varint words, then one range-coder
    stream of every token in coding order (u32 words), then the raw bits (u64 words). One
    stream: no per-bucket flushes and lengths (0.2-3% of a CT slice in format 3)."""
    cap = rc.word_capacity(mp.tokens.size)
    words = np.empty(cap, dtype=np.uint32)
    length = rc.encode_sequence(mp.tokens, mp.snaps, _cdfs(mp), words, 0, cap)
    _check_coded(length)
    out = bytearray()
    write_varint(out, mp.num_bits)
    write_varint(out, int(length))
    out += words[:length].astype("<u4").tobytes()
    out += mp.raw_words[: (mp.num_bits + 63) // 64].astype("<u8").tobytes()
    return bytes(out)


def _bucketed_stream(mp: ModelPass, tables: ContextTables) -> bytes:
    """Formats 1-3: layout 0 (a stream per bucket) or 1 (one stream grouped by bucket per
    wavefront), whichever is smaller."""
    nb = tables.num_buckets
    cdfs = _cdfs(mp)
    out = bytearray()
    write_varint(out, mp.num_bits)
    words, bases, lengths, status = pk._code_bucket_streams(mp.buckets, mp.tokens, mp.snaps, cdfs, nb)
    _check_coded(status)
    per_bucket = [words[bases[b] : bases[b] + lengths[b]] for b in range(nb)]
    shared = None
    if count_runs(mp.buckets, *mp.shape, nb) <= SHARED_STREAM_MAX_RUNS:
        shared_words, length = pk._code_shared_stream(mp.buckets, mp.tokens, mp.snaps, cdfs, *mp.shape, nb)
        _check_coded(length)
        shared = shared_words[:length]
    if shared is not None and 4 * len(shared) + 4 < sum(4 * len(w) + 2 for w in per_bucket):
        out.append(1)
        write_varint(out, len(shared))
        out += shared.astype("<u4").tobytes()
    else:
        out.append(0)
        mask = sum(1 << b for b, words in enumerate(per_bucket) if len(words))
        out += mask.to_bytes(tables.mask_bytes, "little")
        for words in per_bucket:
            if len(words):
                write_varint(out, len(words))
        for words in per_bucket:
            out += words.astype("<u4").tobytes()
    out += mp.raw_words[: (mp.num_bits + 63) // 64].astype("<u8").tobytes()
    return bytes(out)


def max_snapshots(num_symbols: int, num_buckets: int = cm.NUM_BUCKETS,
                  refresh: tuple[int, int] = (cm.MIN_SEGMENT, cm.REFRESH_SHIFT)) -> int:
    """Upper bound on histogram snapshots for a plane (the initial one per bucket + refreshes).

    A bucket refreshes once it has coded min_segment + coded/2**shift new symbols, so after its
    first refresh its count grows by a factor of at least 1 + 2**-shift per refresh: a bucket of
    n symbols refreshes at most 1 + log(n / min_segment) / log(1 + 2**-shift) times. That is
    concave in n, so the buckets together refresh at most num_buckets times the bound at the
    mean count. With format 4's banded tables (1,280 buckets) this passes 2**15, hence int32
    snapshot ids.
    """
    min_segment, shift = refresh
    per_bucket = 4 + int(math.log(num_symbols / num_buckets + min_segment) / math.log(1 + 2.0**-shift)) + 1
    return num_buckets * (per_bucket + 1)


def _check_coded(status: int) -> None:
    if status < 0:  # cannot happen: word_capacity bounds every stream
        raise RuntimeError(f"range coder word buffer overflow ({status})")


def _parse_plane_stream(blob: bytes, tables: ContextTables, height: int, width: int):
    """Split a plane stream into (raw bit count, range-coder words, each stream's [start, end)
    in them, raw words padded so that no wavefront can read past them)."""
    num_bits, pos = read_varint(blob, 0)
    if pos >= len(blob) or blob[pos] not in (0, 1):
        raise CorruptStreamError("residual stream is truncated or has an unknown layout")
    shared = blob[pos] == 1
    pos += 1
    if shared:
        length, pos = read_varint(blob, pos)
        lengths = [length]
    else:
        if pos + tables.mask_bytes > len(blob):
            raise CorruptStreamError("residual stream is truncated")
        mask = int.from_bytes(blob[pos : pos + tables.mask_bytes], "little")
        pos += tables.mask_bytes
        lengths = []
        for b in range(tables.num_buckets):
            value = 0
            if mask >> b & 1:
                value, pos = read_varint(blob, pos)
            lengths.append(value)
    num_words = sum(lengths)
    if pos + 4 * num_words > len(blob):
        raise CorruptStreamError("residual stream is truncated")
    words = np.frombuffer(blob, dtype="<u4", count=num_words, offset=pos).astype(np.uint32)
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    starts = ends - np.asarray(lengths, dtype=np.int64)
    pos += 4 * num_words
    num_raw_words = (num_bits + 63) // 64
    if pos + 8 * num_raw_words != len(blob):
        raise CorruptStreamError("residual stream has the wrong length")
    raw_words = np.frombuffer(blob, dtype="<u8", count=num_raw_words, offset=pos).astype(np.uint64)
    # a wavefront of corrupt tokens may ask for up to 23 raw bits per pixel before the overrun
    # check after it: pad so those reads stay inside the array
    spare = min(height, width) * 23 // 64 + 2
    return num_bits, words, starts, ends, np.concatenate((raw_words, np.zeros(spare, dtype=np.uint64)))


def _parse_in_order_stream(blob: bytes, tables: ContextTables, height: int, width: int):
    """Layout 2 (format 4): as _parse_plane_stream, for the one stream in coding order (`tables`
    unused: the same signature as _parse_plane_stream, which reads the bucket mask)."""
    num_bits, pos = read_varint(blob, 0)
    num_words, pos = read_varint(blob, pos)
    num_raw_words = (num_bits + 63) // 64
    if pos + 4 * num_words + 8 * num_raw_words != len(blob):
        raise CorruptStreamError("residual stream has the wrong length")
    words = np.frombuffer(blob, dtype="<u4", count=num_words, offset=pos).astype(np.uint32)
    pos += 4 * num_words
    raw_words = np.frombuffer(blob, dtype="<u8", count=num_raw_words, offset=pos).astype(np.uint64)
    spare = min(height, width) * 23 // 64 + 2  # see _parse_plane_stream
    return (num_bits, words, np.zeros(1, dtype=np.int64), np.full(1, num_words, dtype=np.int64),
            np.concatenate((raw_words, np.zeros(spare, dtype=np.uint64))))


def decode_plane(
    blob: bytes, height: int, width: int, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None,
    patch: int = 8, tables: ContextTables = V1_TABLES,
) -> np.ndarray:
    """Inverse of `encode_plane` (same shape, range, delta, side information and tables)."""
    parse = _parse_in_order_stream if tables.in_order else _parse_plane_stream
    num_bits, words, starts, ends, raw_words = parse(blob, tables, height, width)
    st = cm.ModelState(height, width, side, patch, tables.prior, tables.bias, tables.refresh,
                       tables.nx == cm.PARITY_CONTEXT)
    out = np.zeros((height, width), dtype=np.int64)
    by_position = blend.blend_table(tables.weight_table, side is not None, tables.lin.shape[0] > 0)
    status = pk._decode_plane_all(
        words, starts, ends, lo, hi, delta, st.xr, st.side, st.has_side, st.patch_mask, st.te, st.perr,
        by_position, st.counts, st.totals, st.snap, st.since, st.coded, st.epoch, st.refresh, st.refreshed, raw_words,
        num_bits, out, tables.lut, tables.nx, tables.lin, tables.value_thresholds, tables.flat_mode, *st.bias_state(),
        tables.in_order,
    )
    if status == pk.ERR_RAW_OVERRUN:
        raise CorruptStreamError("residual stream is corrupt (raw bits overrun)")
    if status != pk.OK:
        raise CorruptStreamError("residual stream is corrupt (invalid range-coder data)")
    return out


# ------------------------------------------------------------------ format 3: independent strips
STRIP_PIXELS = 1 << 20  # planes above this many pixels are cut into strips of about this size
MAX_STRIPS = 16
MIN_STRIP_ROWS = 64


def strip_count(height: int, width: int, pixels_per_strip: int = STRIP_PIXELS) -> int:
    """How many strips the encoder cuts a plane into: one per ~1 MP, so a large radiograph
    decodes on several threads. Each strip restarts the model: measured +0.01% (RG1, 3.6 MP in
    3 strips) to +0.06% (RG3, 3.1 MP in 2); at ~400K pixels per strip it would be +0.6%.
    An odd count above one is rounded up to even: 3 strips on 2 threads decode at most 1.5x
    faster than on one, 4 strips 2x (RG1 in 4 strips instead of 3: +0.005% more)."""
    strips = (height * width) // pixels_per_strip
    strips += strips > 1 and strips % 2
    return max(1, min(MAX_STRIPS, height // MIN_STRIP_ROWS, strips))


def strip_rows(height: int, strips: int, align: int) -> list[tuple[int, int]]:
    """Row ranges of the strips; inner edges fall on multiples of `align` (the latent patch, so
    the guided predictors see the same patch edges as in one piece)."""
    cuts = [0] + [min(height, (k * height // strips) // align * align) for k in range(1, strips)] + [height]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def checked_strip_rows(height: int, strips: int, patch: int) -> list[tuple[int, int]]:
    rows = strip_rows(height, strips, patch)
    if len(rows) != strips or strips > MAX_STRIPS:
        raise InvalidParameterError(f"cannot cut {height} rows into {strips} strips of whole {patch}-row patches")
    return rows


def encode_plane_strips(
    plane: np.ndarray, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None, patch: int = 8,
    tables: ContextTables = V1_TABLES, strips: int | None = None, threads: int | None = 1,
) -> tuple[bytes, np.ndarray]:
    """Format 3's plane stream: varint S, then S x (varint length + a plane stream of one strip).

    Strips are coded independently (each starts from the prior), so a decoder may run them in
    parallel; so may the encoder (`threads`, default 1: batch jobs already use every core).
    Returns the stream and the decoded values, as `encode_plane` does. Same bytes for any count.
    """
    height, width = plane.shape
    rows = checked_strip_rows(height, strips or strip_count(height, width), patch)
    out = bytearray()
    write_varint(out, len(rows))
    values = np.empty(plane.shape, dtype=np.int32)

    def task(r0: int, r1: int):
        return lambda: encode_plane(plane[r0:r1], lo, hi, delta, None if side is None else side[r0:r1], patch, tables)

    for (r0, r1), (blob, strip_values) in zip(rows, run_all([task(*r) for r in rows], threads)):
        write_varint(out, len(blob))
        out += blob
        values[r0:r1] = strip_values
    return bytes(out), values


def split_strips(blob: bytes, height: int, patch: int) -> list[tuple[int, int, bytes]]:
    """(first row, end row, plane stream) of each strip of a format-3 plane stream."""
    count, pos = read_varint(blob, 0)
    if not 1 <= count <= min(MAX_STRIPS, height):
        raise CorruptStreamError(f"residual stream claims {count} strips for {height} rows")
    rows = strip_rows(height, count, patch)
    if len(rows) != count:
        raise CorruptStreamError(f"residual stream claims {count} strips, which {height} rows cannot hold")
    out = []
    for r0, r1 in rows:
        length, pos = read_varint(blob, pos)
        if pos + length > len(blob):
            raise CorruptStreamError("residual stream is truncated (strip)")
        out.append((r0, r1, blob[pos:pos + length]))
        pos += length
    if pos != len(blob):
        raise CorruptStreamError("residual stream has the wrong length (strips)")
    return out


def decode_plane_strips(
    blob: bytes, height: int, width: int, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None,
    patch: int = 8, tables: ContextTables = V1_TABLES, threads: int | None = None,
) -> np.ndarray:
    """Inverse of `encode_plane_strips`; the strips decode on up to `threads` threads (None: one
    per available core, capped; 1: serial), the same pixels for any count."""
    out = np.empty((height, width), dtype=np.int64)
    strips = split_strips(blob, height, patch)

    def task(r0: int, r1: int, strip: bytes):
        return lambda: decode_plane(strip, r1 - r0, width, lo, hi, delta, None if side is None else side[r0:r1],
                                    patch, tables)

    for (r0, r1, _), rows in zip(strips, run_all([task(*s) for s in strips], threads)):
        out[r0:r1] = rows
    return out
