"""The per-plane info of an encoded image's header (format.py): each plane's value range, remap
table, guidance flag and, by version, its linear predictor (3), intensity bands (4) and
predictor weights and wide taps (5). FORMAT.md specifies the bytes.

format.py writes and reads each plane's info through `write_plane_info` / `read_plane_info`.
The constants mirror codec/context_model.py and codec/blend.py, which this module does not
import (headers are read without the kernels); tests check that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CorruptStreamError, InvalidParameterError
from .varint import read_signed, read_varint, write_signed, write_varint

NUM_LINEAR_TAPS = 10  # version 3's linear predictor (codec/context_model.py LIN_TAPS)
NUM_WIDE_LINEAR_TAPS = 16  # version 5 may widen it (LIN_TAPS_WIDE: the same 10, then 6 more)
LINEAR_PARITY_SETS = 4  # version 4: weight sets of a linear predictor per position parity (LIN_PARITY_CLASSES)
# version 5: the blend's predictor weights by role (codec/blend.py PREDICTOR_MAX_WEIGHTS):
# the plain predictors, the pair guided by the reconstruction, the linear one
PLAIN_PREDICTORS = 7
NUM_PREDICTORS = PLAIN_PREDICTORS + 3
DEFAULT_PREDICTOR_WEIGHTS = (13, 12, 12, 12, 12, 12, 12, 12, 12, 12)  # versions 1-4 (fixed)
# version 5: a plane without the PLANE_PREDICTOR_WEIGHTS flag blends with these (trained on the dev
# corpus, blend.TRAINED_PREDICTOR_WEIGHTS); a plane whose weights differ carries its own
V5_PREDICTOR_WEIGHTS = (2, 1, 11, 13, 14, 3, 9, 12, 12, 36)
MAX_PREDICTOR_WEIGHT = 255
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


def write_plane_info(out: bytearray, plane: PlaneInfo, version: int) -> None:
    """A plane's info as format `version` writes it, refusing what that version cannot carry."""
    if plane.value_classes is not None and version < 4:
        raise InvalidParameterError(f"format version {version} has no intensity bands")
    if plane.linear is not None and plane.linear.ndim == 2 and version < 4:
        raise InvalidParameterError(f"format version {version} has no linear predictor per parity")
    if plane.predictor_weights is not None and version < 5:
        raise InvalidParameterError(f"format version {version} has no predictor weights")
    if plane.linear is not None and plane.linear.shape[-1] != NUM_LINEAR_TAPS and (
            version < 5 or plane.linear.shape[-1] != NUM_WIDE_LINEAR_TAPS):
        raise InvalidParameterError(f"format version {version} has no linear predictor of "
                                    f"{plane.linear.shape[-1]} taps")
    if version >= 3:
        _write_plane_info_v3(out, plane)
    else:
        _write_plane_info_v1(out, plane)


def read_plane_info(h: bytes, pos: int, version: int) -> tuple[PlaneInfo, int]:
    """A plane's info from a format `version` header at pos, and the position after it."""
    if version >= 3:
        return _read_plane_info_v3(h, pos, NUM_LINEAR_TAPS, version)
    return _read_plane_info(h, pos)


def _write_plane_info_v1(out: bytearray, plane: PlaneInfo) -> None:
    write_signed(out, plane.lo)
    write_signed(out, plane.hi)
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
    write_signed(out, plane.lo)
    write_signed(out, plane.hi)
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
            write_signed(out, w)
    if plane.value_classes is not None:  # version 4: count, first threshold, then the gaps
        thresholds = plane.value_classes.tolist()
        out.append(len(thresholds))
        write_signed(out, thresholds[0])
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
    write_signed(runs_out, int(values[0]))
    runs = value_runs(values)
    write_varint(runs_out, len(runs))
    for run in runs:
        write_varint(runs_out, run)
    bitmap_out = bytearray()
    write_signed(bitmap_out, int(values[0]))
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
    lo, pos = read_signed(h, pos)
    hi, pos = read_signed(h, pos)
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
        first, pos = read_signed(h, pos)
        span, pos = read_varint(h, pos)
        if not 1 <= span <= 1 << 24 or pos + (span + 7) // 8 > len(h):
            raise CorruptStreamError("encoded image header is corrupt (remap bitmap)")
        used = np.unpackbits(np.frombuffer(h, np.uint8, (span + 7) // 8, pos), count=span, bitorder="little")
        pos += (span + 7) // 8
        remap = first + np.flatnonzero(used).astype(np.int64)
        if len(remap) != hi - lo + 1 or not used[0] or not used[-1]:
            raise CorruptStreamError("encoded image header is corrupt (remap bitmap does not match the plane range)")
    if flags & PLANE_REMAP:
        first, pos = read_signed(h, pos)
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
            w, pos = read_signed(h, pos)
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
    first, pos = read_signed(h, pos + 1)
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
