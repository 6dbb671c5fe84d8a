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
Version 5 trains the blend's predictor weights (a plane may carry its own), refreshes
histograms more often and may widen a plane's linear predictor to 16 taps. Version 6 (the
default) has version 5's bytes, and a plane with linear weights per position parity models
each parity apart: histograms, bias corrections, the blend's error sums (FORMAT.md).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import CorruptStreamError, InvalidParameterError
from .pixels import SUPPORTED_DTYPES, PixelLayout
from .plane_header import PlaneInfo, read_plane_info, write_plane_info
from .varint import read_signed, read_varint, write_signed, write_varint

MAGIC = b"LRBI"
FORMAT_VERSION = 6  # what encode writes by default
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)  # every version ever released: archives outlive the code
MODES = ("lossless", "near-lossless", "lossy")
COLOUR_TRANSFORMS = ("none", "rct", "ycocg")  # rct: lossless residual planes; ycocg: lossy latents


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
        write_plane_info(out, plane, enc.version)
    write_signed(out, enc.latent_range[0])
    write_signed(out, enc.latent_range[1])
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
        plane, pos = read_plane_info(h, pos, version)
        planes.append(plane)
    lat_lo, pos = read_signed(h, pos)
    lat_hi, pos = read_signed(h, pos)
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
