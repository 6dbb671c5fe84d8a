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
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptStreamError, InvalidParameterError
from . import context_model as cm
from . import plane_kernels as pk
from . import range_coder as rc
from .stream_order import count_runs
from .threads import run_all
from .varint import read_varint, write_varint

SHARED_STREAM_MAX_RUNS = 4000  # above this many (wavefront, bucket) runs: per-bucket streams (fixed: same bytes)


@dataclass(frozen=True)
class ContextTables:
    """What maps the model's context to a histogram, and the histograms' starting counts.

    Format 1: the 80 activity buckets with a geometric prior (nx = 1, identity table).
    Format 2: a finer context (activity bucket x NUM_EXTRA classes) mapped to trained buckets
    by `lut`, each starting from trained integer counts (`prior`), from the coder model file.
    """

    lut: np.ndarray  # int64 (fine contexts,) -> bucket
    nx: int  # extra classes per activity bucket (1: none)
    prior: np.ndarray  # int64 (buckets, NUM_TOKENS), every count >= 1
    lin: np.ndarray = field(default_factory=lambda: cm.NO_LINEAR)  # int64 (LIN_CLASSES, taps): the trained linear predictor; none: (0, taps)
    bias: bool = False  # format 3: bias cancellation (context_model._cancel_bias)

    @property
    def num_buckets(self) -> int:
        return self.prior.shape[0]

    @property
    def mask_bytes(self) -> int:
        return (self.num_buckets + 7) // 8


V1_TABLES = ContextTables(cm.V1_LUT, 1, cm._PRIOR)
V3_TABLES = ContextTables(cm.V1_LUT, 1, cm._PRIOR, bias=True)  # + each plane's linear predictor, if any


def encode_plane(
    plane: np.ndarray, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None, patch: int = 8,
    tables: ContextTables = V1_TABLES,
) -> tuple[bytes, np.ndarray]:
    """Code `plane` (integers in [lo, hi]); `delta` > 0 allows that much error per pixel.

    `side` is the integer low-rank reconstruction (same shape, built from `patch` x `patch`
    blocks) that guides prediction; the decoder must be given the identical array. Returns the stream and what the decoder will
    reconstruct from it (the plane itself when delta is 0).
    """
    if not 0 <= hi - lo <= cm.MAX_SPAN:
        raise InvalidParameterError(f"plane value range [{lo}, {hi}] is wider than the coder's 2**24")
    x = np.ascontiguousarray(plane, dtype=np.int64)
    n = x.size
    nb = tables.num_buckets
    st = cm.ModelState(*x.shape, side, patch, tables.prior, tables.bias)
    # per-pixel outputs in the smallest types that hold them: large scans stay small
    out_bucket = np.empty(n, dtype=np.uint8)
    out_token = np.empty(n, dtype=np.uint8)  # < NUM_TOKENS = 104
    out_snap = np.empty(n, dtype=np.int16)  # < max_snapshots(n), about 6,500 at 16 MP
    snapshots = np.empty((max_snapshots(n, nb), cm.NUM_TOKENS), dtype=np.int64)
    raw_words = np.zeros(n * 17 // 64 + 2, dtype=np.uint64)
    values = np.empty(x.shape, dtype=np.int32)
    num_snap, num_bits = pk._encode_plane(
        x, lo, hi, delta, st.xr, st.side, st.has_side, st.patch_mask, st.te, st.perr, st.counts, st.totals, st.snap,
        st.since, st.coded, st.epoch, st.refreshed, cm.PREDICTOR_MAX_WEIGHTS,
        out_bucket, out_token, out_snap, snapshots, raw_words, values, tables.lut, tables.nx, tables.lin,
        *st.bias_state(),
    )
    cdfs = np.empty((num_snap, cm.NUM_TOKENS + 1), dtype=np.uint32)
    rc.quantise_rows(snapshots[:num_snap], cdfs)

    out = bytearray()
    write_varint(out, int(num_bits))
    words, bases, lengths, status = pk._code_bucket_streams(out_bucket, out_token, out_snap, cdfs, nb)
    _check_coded(status)
    per_bucket = [words[bases[b] : bases[b] + lengths[b]] for b in range(nb)]
    shared = None
    if count_runs(out_bucket, x.shape[0], x.shape[1], nb) <= SHARED_STREAM_MAX_RUNS:
        shared_words, length = pk._code_shared_stream(out_bucket, out_token, out_snap, cdfs, *x.shape, nb)
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
    out += raw_words[: (num_bits + 63) // 64].astype("<u8").tobytes()
    return bytes(out), values


def max_snapshots(num_symbols: int, num_buckets: int = cm.NUM_BUCKETS) -> int:
    """Upper bound on histogram snapshots for a plane (the initial one per bucket + refreshes).

    A bucket refreshes once it has coded MIN_SEGMENT + coded/4 new symbols, so its count grows
    by at least 25% per refresh: at most log(n)/log(1.25) + a few refreshes per bucket. This
    stays below 2**15 for any n < 2**60, so snapshot ids fit the int16 per-pixel output.
    """
    per_bucket = 4 + int(math.log(num_symbols + cm.MIN_SEGMENT) / math.log(1.25)) + 1
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


def decode_plane(
    blob: bytes, height: int, width: int, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None,
    patch: int = 8, tables: ContextTables = V1_TABLES,
) -> np.ndarray:
    """Inverse of `encode_plane` (same shape, range, delta, side information and tables)."""
    num_bits, words, starts, ends, raw_words = _parse_plane_stream(blob, tables, height, width)
    st = cm.ModelState(height, width, side, patch, tables.prior, tables.bias)
    out = np.zeros((height, width), dtype=np.int64)
    status = pk._decode_plane_all(
        words, starts, ends, lo, hi, delta, st.xr, st.side, st.has_side, st.patch_mask, st.te, st.perr,
        cm.PREDICTOR_MAX_WEIGHTS, st.counts, st.totals, st.snap, st.since, st.coded, st.epoch, st.refreshed, raw_words,
        num_bits, out, tables.lut, tables.nx, tables.lin, *st.bias_state(),
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
    strips = strips or strip_count(height, width)
    rows = strip_rows(height, strips, patch)
    if len(rows) != strips or strips > MAX_STRIPS:
        raise InvalidParameterError(f"cannot cut {height} rows into {strips} strips of whole {patch}-row patches")
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
