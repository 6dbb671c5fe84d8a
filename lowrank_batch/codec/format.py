"""EncodedImage: one coded image and its versioned, self-describing byte form.

Byte layout (little-endian):
    b"LRBI"  magic
    u8       format version (FORMAT_VERSION)
    varint   header length, then the header (fields below, in order)
    varint   latent stream length, then the latent stream
    u8       number of planes; per plane: varint length + residual stream (empty when lossy)
    u32      CRC-32 of every byte before it

The header carries what decode needs besides the model: layout (shape, dtype, bits, offset),
mode, max error, quality, rank, latent step (float64: reconstruction depends on its exact
bits), colour transform, per-plane value ranges, remap tables and guidance flags, and the
SHA-256 digests of the original pixels, of the decoded reconstruction (omitted when equal:
lossless), of the model and of the adapter; PSNR figures as float32. Version 2 appends the
SHA-256 of the residual coder's trained context tables (the same residual stream layout,
with that many buckets in the bitmask); version 1 images use the built-in format-1 tables.
Version 3 codes each plane's remap table as runs, may carry a per-plane linear predictor's
integer weights, and cuts large planes into independent strips. Version 4 codes each strip as
one range-coder stream in coding order and may carry per-plane intensity band thresholds.
Version 5 (the default) trains the blend's predictor weights (a plane may carry its own),
refreshes histograms more often and may widen a plane's linear predictor to 16 taps (FORMAT.md).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptStreamError, InvalidParameterError
from .pixels import SUPPORTED_DTYPES, PixelLayout
from .varint import read_varint, write_varint

MAGIC = b"LRBI"
NUM_LINEAR_TAPS = 10  # version 3's linear predictor (codec/context_model.py LIN_TAPS)
NUM_WIDE_LINEAR_TAPS = 16  # version 5 may widen it (LIN_TAPS_WIDE: the same 10, then 6 more)
LINEAR_PARITY_SETS = 4  # version 4: weight sets of a linear predictor per position parity (LIN_PARITY_CLASSES)
# version 5: the blend's predictor weights by role (codec/context_model.py PREDICTOR_MAX_WEIGHTS):
# the plain predictors, the pair guided by the reconstruction, the linear one
PLAIN_PREDICTORS = 7
NUM_PREDICTORS = PLAIN_PREDICTORS + 3
DEFAULT_PREDICTOR_WEIGHTS = (13, 12, 12, 12, 12, 12, 12, 12, 12, 12)  # versions 1-4 (fixed)
# version 5: a plane without the PLANE_PREDICTOR_WEIGHTS flag blends with these (trained on the dev
# corpus, context_model.TRAINED_PREDICTOR_WEIGHTS); a plane whose weights differ carries its own
V5_PREDICTOR_WEIGHTS = (2, 1, 11, 13, 14, 3, 9, 12, 12, 36)
MAX_PREDICTOR_WEIGHT = 255
FORMAT_VERSION = 5  # what encode writes by default
READABLE_VERSIONS = (1, 2, 3, 4, 5)  # every version ever released: archives outlive the code
MODES = ("lossless", "near-lossless", "lossy")
COLOUR_TRANSFORMS = ("none", "rct", "ycocg")  # rct: lossless residual planes; ycocg: lossy latents
PLANE_VALUE_LIMIT = 1 << 24  # |plane value| bound (16-bit pixels, +1 bit for RCT); beyond: a corrupt header


@dataclass
class PlaneInfo:
    lo: int  # range of the coded values (after colour transform / remap)
    hi: int
    remap: np.ndarray | None = None  # sorted distinct values when the plane is coded as indices
    guided: bool = False  # residual prediction uses the low-rank reconstruction
    linear: np.ndarray | None = None  # version 3: fitted linear predictor weights (taps,); version 4 also (4, taps)
    value_classes: np.ndarray | None = None  # version 4: intensity band thresholds (increasing ints)
    # version 5: the blend's predictor weights by role (NUM_PREDICTORS ints, 1..MAX_PREDICTOR_WEIGHT);
    # roles the plane does not use (the guided pair, the linear one) hold their defaults
    predictor_weights: np.ndarray | None = None


@dataclass
class EncodedImage:
    layout: PixelLayout
    mode: str
    max_error: int
    quality: float
    rank: int
    latent_step: float  # in units of the full pixel range
    colour_transform: str
    planes: list[PlaneInfo]
    latent_range: tuple[int, int]
    latent_stream: bytes
    residual_streams: list[bytes]
    pixel_sha256: str
    decoded_sha256: str  # of the near-lossless reconstruction; equal to pixel_sha256 when lossless
    model_sha256: str
    adapter_sha256: str | None = None
    psnr: float = float("inf")  # of the full decode (lossy: of the latents-only decode); float32 in bytes
    preview_psnr: float = float("nan")  # float32 in bytes
    extra: dict = field(default_factory=dict)
    version: int = FORMAT_VERSION  # the format version byte: it selects the decoder
    tables_sha256: str | None = None  # version 2: the residual coder's trained context tables

    @property
    def num_pixels(self) -> int:
        return self.layout.height * self.layout.width

    @property
    def encoded_bytes(self) -> int:
        return len(self.to_bytes())

    @property
    def bpp(self) -> float:
        return 8.0 * self.encoded_bytes / self.num_pixels

    def to_bytes(self) -> bytes:
        if (self.version == 2) != (self.tables_sha256 is not None):
            raise InvalidParameterError(
                f"format version {self.version} and context tables {self.tables_sha256} disagree")
        header = _pack_header(self)
        out = bytearray(MAGIC)
        if self.version not in READABLE_VERSIONS:
            raise InvalidParameterError(f"format version {self.version} is unknown to this build")
        out.append(self.version)
        write_varint(out, len(header))
        out += header
        write_varint(out, len(self.latent_stream))
        out += self.latent_stream
        out.append(len(self.residual_streams))
        for stream in self.residual_streams:
            write_varint(out, len(stream))
            out += stream
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)

    def split(self) -> tuple[bytes, bytes | None]:
        """(latent, residual) columns of the archive: `latent` is itself a valid encoded image
        without residuals (enough for a preview); `residual` holds the residual streams."""
        latent = dataclasses.replace(self, residual_streams=[]).to_bytes()
        if not self.residual_streams:
            return latent, None
        out = bytearray()
        for stream in self.residual_streams:
            write_varint(out, len(stream))
            out += stream
        return latent, bytes(out)

    @classmethod
    def join(cls, latent: bytes, residual: bytes | None) -> "EncodedImage":
        """Inverse of split; residual None gives a latents-only image (preview decoding)."""
        enc = cls.from_bytes(latent)
        if residual:
            streams, pos = [], 0
            while pos < len(residual):
                n, pos = read_varint(residual, pos)
                streams.append(_take(residual, pos, n))
                pos += n
            if len(streams) != len(enc.planes):
                raise CorruptStreamError(f"residual column holds {len(streams)} streams, expected {len(enc.planes)}")
            enc.residual_streams = streams
        return enc

    @classmethod
    def from_bytes(cls, blob: bytes) -> "EncodedImage":
        """Parse a byte string; raise CorruptStreamError if it is truncated, foreign or damaged."""
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise CorruptStreamError(f"expected bytes, got {type(blob).__name__}")
        blob = bytes(blob)
        if len(blob) < len(MAGIC) + 5 or blob[:4] != MAGIC:
            raise CorruptStreamError("not a lowrank_batch encoded image (bad magic bytes)")
        if blob[4] not in READABLE_VERSIONS:
            raise CorruptStreamError(
                f"encoded image has format version {blob[4]}; this build reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        (crc,) = struct.unpack("<I", blob[-4:])
        if zlib.crc32(blob[:-4]) != crc:
            raise CorruptStreamError("encoded image is damaged or truncated (CRC-32 mismatch)")
        body = blob[:-4]
        header_len, pos = read_varint(body, 5)
        header = _take(body, pos, header_len)
        pos += header_len
        latent_len, pos = read_varint(body, pos)
        latent = _take(body, pos, latent_len)
        pos += latent_len
        if pos >= len(body):
            raise CorruptStreamError("encoded image is truncated (no plane count)")
        num_planes = body[pos]
        pos += 1
        residuals = []
        for _ in range(num_planes):
            n, pos = read_varint(body, pos)
            residuals.append(_take(body, pos, n))
            pos += n
        if pos != len(body):
            raise CorruptStreamError("encoded image has trailing bytes")
        enc = _unpack_header(header, blob[4])
        enc.version = blob[4]
        enc.latent_stream = latent
        enc.residual_streams = residuals
        if len(residuals) not in (0, len(enc.planes)):
            raise CorruptStreamError("encoded image has a residual stream count that does not match its planes")
        return enc


def _take(data: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(data):
        raise CorruptStreamError("encoded image is truncated")
    return data[pos : pos + n]


def _write_str(out: bytearray, s: str) -> None:
    raw = s.encode()
    write_varint(out, len(raw))
    out += raw


def _write_signed(out: bytearray, v: int) -> None:
    write_varint(out, (v << 1) if v >= 0 else ((-v << 1) - 1))


def _read_signed(data: bytes, pos: int) -> tuple[int, int]:
    u, pos = read_varint(data, pos)
    return (u >> 1) if not u & 1 else -((u + 1) >> 1), pos


def _pack_header(enc: EncodedImage) -> bytes:
    out = bytearray()
    lay = enc.layout
    out.append(len(lay.shape))
    for s in lay.shape:
        write_varint(out, s)
    out.append(SUPPORTED_DTYPES.index(lay.dtype))
    out.append(lay.bits_stored)
    write_varint(out, lay.offset)
    out.append(MODES.index(enc.mode))
    write_varint(out, enc.max_error)
    out += struct.pack("<f", enc.quality)
    write_varint(out, enc.rank)
    out += struct.pack("<d", enc.latent_step)
    out.append(COLOUR_TRANSFORMS.index(enc.colour_transform))
    out.append(len(enc.planes))
    for plane in enc.planes:
        if plane.value_classes is not None and enc.version < 4:
            raise InvalidParameterError(f"format version {enc.version} has no intensity bands")
        if plane.linear is not None and plane.linear.ndim == 2 and enc.version < 4:
            raise InvalidParameterError(f"format version {enc.version} has no linear predictor per parity")
        if plane.predictor_weights is not None and enc.version < 5:
            raise InvalidParameterError(f"format version {enc.version} has no predictor weights")
        if plane.linear is not None and plane.linear.shape[-1] != NUM_LINEAR_TAPS and (
                enc.version < 5 or plane.linear.shape[-1] != NUM_WIDE_LINEAR_TAPS):
            raise InvalidParameterError(f"format version {enc.version} has no linear predictor of "
                                        f"{plane.linear.shape[-1]} taps")
        if enc.version >= 3:
            _write_plane_info_v3(out, plane)
        else:
            _write_plane_info_v1(out, plane)
    _write_signed(out, enc.latent_range[0])
    _write_signed(out, enc.latent_range[1])
    out += bytes.fromhex(enc.pixel_sha256)
    same = enc.decoded_sha256 == enc.pixel_sha256  # lossless: one digest serves both
    out.append(1 if same else 0)
    if not same:
        out += bytes.fromhex(enc.decoded_sha256)
    out += bytes.fromhex(enc.model_sha256)
    out.append(1 if enc.adapter_sha256 else 0)
    if enc.adapter_sha256:
        out += bytes.fromhex(enc.adapter_sha256)
    out += struct.pack("<ff", enc.psnr, enc.preview_psnr)
    if enc.version == 2:  # version 2 appends the digest of the residual coder's context tables
        out += bytes.fromhex(enc.tables_sha256)
    return bytes(out)


def _write_plane_info_v1(out: bytearray, plane: PlaneInfo) -> None:
    _write_signed(out, plane.lo)
    _write_signed(out, plane.hi)
    out.append(1 if plane.guided else 0)
    values = plane.remap if plane.remap is not None else np.zeros(0, dtype=np.int64)
    write_varint(out, len(values))
    previous = plane.lo
    for v in values.tolist():  # ascending: store gaps
        write_varint(out, v - previous)
        previous = v


PLANE_GUIDED, PLANE_REMAP, PLANE_LINEAR, PLANE_REMAP_BITMAP = 1, 2, 4, 8  # version 3 per-plane flags
PLANE_VALUE_CLASSES, PLANE_LINEAR_PARITY = 16, 32  # version 4
PLANE_PREDICTOR_WEIGHTS, PLANE_LINEAR_WIDE = 64, 128  # version 5
MAX_VALUE_THRESHOLDS = 7  # version 4: at most 8 intensity bands per plane


def _write_plane_info_v3(out: bytearray, plane: PlaneInfo) -> None:
    """Version 3: flags, then the remap table as runs of used / unused values or as a bitmap of
    the span, whichever is smaller (a CT's 2,500 used values of a 4,500-value span cost ~20
    bytes as runs instead of 2,500 as v1's gaps), then the linear predictor's weights."""
    _write_signed(out, plane.lo)
    _write_signed(out, plane.hi)
    table = remap_table_bytes(plane.remap) if plane.remap is not None else None
    flags = PLANE_GUIDED * plane.guided | PLANE_LINEAR * (plane.linear is not None)
    flags |= PLANE_VALUE_CLASSES * (plane.value_classes is not None)
    flags |= PLANE_LINEAR_PARITY * (plane.linear is not None and plane.linear.ndim == 2)
    roles = predictor_roles(plane.guided, plane.linear is not None)
    own_weights = plane.predictor_weights is not None and any(  # version 5: only weights off its defaults
        int(plane.predictor_weights[r]) != V5_PREDICTOR_WEIGHTS[r] for r in roles)
    flags |= PLANE_PREDICTOR_WEIGHTS * own_weights
    flags |= PLANE_LINEAR_WIDE * (plane.linear is not None and plane.linear.shape[-1] == NUM_WIDE_LINEAR_TAPS)
    if table is not None:
        flags |= table[0]
    out.append(flags)
    if table is not None:
        out += table[1]
    if plane.linear is not None:  # version 4 with the parity flag: LIN_PARITY_CLASSES weight sets
        for w in plane.linear.ravel().tolist():
            _write_signed(out, w)
    if plane.value_classes is not None:  # version 4: count, first threshold, then the gaps
        thresholds = plane.value_classes.tolist()
        out.append(len(thresholds))
        _write_signed(out, thresholds[0])
        for a, b in zip(thresholds[:-1], thresholds[1:]):
            write_varint(out, b - a)
    if own_weights:  # version 5: the weights of the roles the plane uses
        weights = plane.predictor_weights.tolist()
        for role in roles:
            if not 1 <= weights[role] <= MAX_PREDICTOR_WEIGHT:
                raise InvalidParameterError(f"predictor weight {weights[role]} is outside 1..{MAX_PREDICTOR_WEIGHT}")
            write_varint(out, weights[role])


def plane_predictor_weights(weights, guided: bool, linear: bool) -> np.ndarray:
    """Version 5: `weights` (by role) as a plane's header keeps them: the roles the plane does
    not use hold the version's defaults (they weigh nothing in its blend)."""
    used = np.array(V5_PREDICTOR_WEIGHTS, dtype=np.int64)
    roles = predictor_roles(guided, linear)
    used[roles] = np.asarray(weights, dtype=np.int64)[roles]
    return used


def predictor_roles(guided: bool, linear: bool) -> list[int]:
    """Version 5: the predictor roles a plane's blend uses (the plain ones, the guided pair,
    the linear one), whose weights its header carries."""
    roles = list(range(PLAIN_PREDICTORS))
    if guided:
        roles += [PLAIN_PREDICTORS, PLAIN_PREDICTORS + 1]
    if linear:
        roles.append(PLAIN_PREDICTORS + 2)
    return roles


def remap_table_bytes(values: np.ndarray) -> tuple[int, bytes]:
    """(flag, bytes) of the smaller coding of a sorted value table: runs or a bitmap."""
    values = values.astype(np.int64)
    runs_out = bytearray()
    _write_signed(runs_out, int(values[0]))
    runs = value_runs(values)
    write_varint(runs_out, len(runs))
    for run in runs:
        write_varint(runs_out, run)
    bitmap_out = bytearray()
    _write_signed(bitmap_out, int(values[0]))
    span = int(values[-1] - values[0]) + 1
    write_varint(bitmap_out, span)
    used = np.zeros(span, dtype=bool)
    used[values - values[0]] = True
    bitmap_out += np.packbits(used, bitorder="little").tobytes()
    if len(bitmap_out) < len(runs_out):
        return PLANE_REMAP_BITMAP, bytes(bitmap_out)
    return PLANE_REMAP, bytes(runs_out)


def value_runs(values: np.ndarray) -> list[int]:
    """Sorted distinct values -> alternating run lengths: used, unused, used, ... (from values[0])."""
    breaks = np.flatnonzero(np.diff(values) > 1)  # a gap follows values[breaks]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(values) - 1]))  # inclusive
    runs: list[int] = []
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        if k:
            runs.append(int(values[s] - values[ends[k - 1]] - 1))
        runs.append(e - s + 1)
    return runs


def values_from_runs(first: int, runs: list[int]) -> np.ndarray:
    pieces = []
    v = first
    for k, run in enumerate(runs):
        if k % 2 == 0:
            pieces.append(np.arange(v, v + run, dtype=np.int64))
        v += run
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def _read_plane_range(h: bytes, pos: int) -> tuple[int, int, int]:
    lo, pos = _read_signed(h, pos)
    hi, pos = _read_signed(h, pos)
    # checked here, before any value reaches a fixed-width array: a corrupt header's huge
    # varints must give CorruptStreamError, not OverflowError
    if not -PLANE_VALUE_LIMIT <= lo <= hi <= PLANE_VALUE_LIMIT:
        raise CorruptStreamError(f"encoded image header is corrupt (plane range {lo}..{hi})")
    return lo, hi, pos


def _read_plane_info_v3(h: bytes, pos: int, num_taps: int, version: int = 3) -> tuple[PlaneInfo, int]:
    lo, hi, pos = _read_plane_range(h, pos)
    flags = h[pos]
    pos += 1
    known = PLANE_GUIDED | PLANE_REMAP | PLANE_LINEAR | PLANE_REMAP_BITMAP
    if version >= 4:
        known |= PLANE_VALUE_CLASSES | PLANE_LINEAR_PARITY
    if version >= 5:
        known |= PLANE_PREDICTOR_WEIGHTS | PLANE_LINEAR_WIDE
    if flags & ~known or (flags & PLANE_REMAP and flags & PLANE_REMAP_BITMAP) or (
            flags & (PLANE_LINEAR_PARITY | PLANE_LINEAR_WIDE) and not flags & PLANE_LINEAR):
        raise CorruptStreamError(f"encoded image header is corrupt (plane flags {flags})")
    remap = linear = None
    if flags & PLANE_REMAP_BITMAP:
        first, pos = _read_signed(h, pos)
        span, pos = read_varint(h, pos)
        if not 1 <= span <= 1 << 24 or pos + (span + 7) // 8 > len(h):
            raise CorruptStreamError("encoded image header is corrupt (remap bitmap)")
        used = np.unpackbits(np.frombuffer(h, np.uint8, (span + 7) // 8, pos), count=span, bitorder="little")
        pos += (span + 7) // 8
        remap = first + np.flatnonzero(used).astype(np.int64)
        if len(remap) != hi - lo + 1 or not used[0] or not used[-1]:
            raise CorruptStreamError("encoded image header is corrupt (remap bitmap does not match the plane range)")
    if flags & PLANE_REMAP:
        first, pos = _read_signed(h, pos)
        count, pos = read_varint(h, pos)
        if count % 2 == 0 or count > len(h):  # runs start and end with used values
            raise CorruptStreamError("encoded image header is corrupt (remap runs)")
        runs = []
        for _ in range(count):
            run, pos = read_varint(h, pos)
            runs.append(run)
        if any(r < 1 for r in runs) or sum(runs[0::2]) != hi - lo + 1 or sum(runs) > 1 << 24:
            raise CorruptStreamError("encoded image header is corrupt (remap runs do not match the plane range)")
        remap = values_from_runs(first, runs)
    if flags & PLANE_LINEAR:
        sets = LINEAR_PARITY_SETS if flags & PLANE_LINEAR_PARITY else 1
        num_taps = NUM_WIDE_LINEAR_TAPS if flags & PLANE_LINEAR_WIDE else num_taps
        weights = []
        for _ in range(sets * num_taps):
            w, pos = _read_signed(h, pos)
            if abs(w) >= 1 << 15:
                raise CorruptStreamError("encoded image header is corrupt (linear predictor weights out of range)")
            weights.append(w)
        linear = np.array(weights, dtype=np.int64)
        if sets > 1:
            linear = linear.reshape(sets, num_taps)
    bands = None
    if flags & PLANE_VALUE_CLASSES:
        bands, pos = _read_value_classes(h, pos, lo, hi)
    weights = np.array(V5_PREDICTOR_WEIGHTS, dtype=np.int64) if version >= 5 else None
    if flags & PLANE_PREDICTOR_WEIGHTS:
        for role in predictor_roles(bool(flags & PLANE_GUIDED), linear is not None):
            w, pos = read_varint(h, pos)
            if not 1 <= w <= MAX_PREDICTOR_WEIGHT:  # checked before it reaches the int64 array
                raise CorruptStreamError(f"encoded image header is corrupt (predictor weight {w} "
                                         f"outside 1..{MAX_PREDICTOR_WEIGHT})")
            weights[role] = w
    return PlaneInfo(lo, hi, remap, bool(flags & PLANE_GUIDED), linear, bands, weights), pos


def _read_value_classes(h: bytes, pos: int, lo: int, hi: int) -> tuple[np.ndarray, int]:
    """Version 4: a plane's intensity band thresholds (strictly increasing, inside its range)."""
    if pos >= len(h) or not 1 <= h[pos] <= MAX_VALUE_THRESHOLDS:
        raise CorruptStreamError("encoded image header is corrupt (intensity band count)")
    count = h[pos]
    first, pos = _read_signed(h, pos + 1)
    thresholds = [first]
    for _ in range(count - 1):
        gap, pos = read_varint(h, pos)
        thresholds.append(thresholds[-1] + gap)
    if not lo < first or thresholds[-1] > hi or any(b <= a for a, b in zip(thresholds[:-1], thresholds[1:])):
        raise CorruptStreamError("encoded image header is corrupt (intensity band thresholds)")
    return np.array(thresholds, dtype=np.int64), pos


def _read_plane_info(h: bytes, pos: int) -> tuple[PlaneInfo, int]:
    lo, hi, pos = _read_plane_range(h, pos)
    guided = bool(h[pos])
    pos += 1
    n, pos = read_varint(h, pos)
    remap = None
    if n:
        values = []
        v = lo
        for _ in range(n):
            gap, pos = read_varint(h, pos)
            v += gap
            values.append(v)
        remap = np.array(values, dtype=np.int64)
    return PlaneInfo(lo, hi, remap, guided), pos


def _read_digests(h: bytes, pos: int) -> tuple[list[str], int]:
    """Pixel, decoded (unless flagged equal to the pixel digest) and model SHA-256."""
    digests: list[str] = []
    for k in range(3):
        if k == 1:
            same = h[pos]
            pos += 1
            if same:
                digests.append(digests[0])
                continue
        if pos + 32 > len(h):
            raise CorruptStreamError("encoded image header is truncated (digests)")
        digests.append(h[pos : pos + 32].hex())
        pos += 32
    return digests, pos


def _unpack_header(h: bytes, version: int) -> EncodedImage:
    try:
        return _unpack_header_fields(h, version)
    except CorruptStreamError:
        raise
    except (IndexError, ValueError, struct.error) as exc:
        raise CorruptStreamError(f"encoded image header is corrupt ({exc})") from None


def _unpack_header_fields(h: bytes, version: int) -> EncodedImage:
    pos = 0
    ndim = h[pos]
    pos += 1
    if ndim not in (2, 3):
        raise CorruptStreamError(f"encoded image header is corrupt (ndim {ndim})")
    shape = []
    for _ in range(ndim):
        s, pos = read_varint(h, pos)
        shape.append(s)
    dtype = SUPPORTED_DTYPES[h[pos]]
    bits = h[pos + 1]
    pos += 2
    offset, pos = read_varint(h, pos)
    mode = MODES[h[pos]]
    pos += 1
    max_error, pos = read_varint(h, pos)
    (quality,) = struct.unpack_from("<f", h, pos)
    pos += 4
    rank, pos = read_varint(h, pos)
    (step,) = struct.unpack_from("<d", h, pos)
    pos += 8
    colour = COLOUR_TRANSFORMS[h[pos]]
    num_planes = h[pos + 1]
    pos += 2
    planes = []
    for _ in range(num_planes):
        plane, pos = (_read_plane_info_v3(h, pos, NUM_LINEAR_TAPS, version) if version >= 3
                      else _read_plane_info(h, pos))
        planes.append(plane)
    lat_lo, pos = _read_signed(h, pos)
    lat_hi, pos = _read_signed(h, pos)
    digests, pos = _read_digests(h, pos)
    has_adapter = h[pos]
    pos += 1
    adapter = None
    if has_adapter:
        adapter = h[pos : pos + 32].hex()
        pos += 32
    psnr, preview_psnr = struct.unpack_from("<ff", h, pos)
    pos += 8
    tables = None
    if version == 2:
        if pos + 32 > len(h):
            raise CorruptStreamError("encoded image header is truncated (context tables digest)")
        tables = h[pos : pos + 32].hex()
        pos += 32
    if pos != len(h):
        raise CorruptStreamError("encoded image header has the wrong length")
    if not 8 <= bits <= 16 or any(s < 1 for s in shape):
        raise CorruptStreamError("encoded image header is corrupt (bits or shape out of range)")
    layout = PixelLayout(tuple(shape), dtype, bits, offset)
    return EncodedImage(
        layout=layout, mode=mode, max_error=max_error, quality=quality, rank=rank, latent_step=step,
        colour_transform=colour, planes=planes, latent_range=(lat_lo, lat_hi), latent_stream=b"",
        residual_streams=[], pixel_sha256=digests[0], decoded_sha256=digests[1], model_sha256=digests[2],
        adapter_sha256=adapter, psnr=psnr, preview_psnr=preview_psnr, version=version, tables_sha256=tables,
    )
