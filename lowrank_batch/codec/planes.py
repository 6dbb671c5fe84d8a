"""The integer planes the residual coder sees: colour decorrelation, sparse-value remapping,
and the matching side information (the latent reconstruction, in the same space).

Pure functions; encoder and decoder must agree on them bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import pixels
from .plane_header import PlaneInfo


def coded_planes(planes: np.ndarray, recon: np.ndarray, layout: pixels.PixelLayout, mode: str,
                 remap_max_density: float) -> tuple[np.ndarray, np.ndarray, list[PlaneInfo], str]:
    """(coded planes, their side information, per-plane ranges, colour transform) for encoding."""
    maxval = layout.maxval
    if layout.channels == 3 and mode == "lossless":
        # decorrelate colours; near-lossless keeps RGB so the bound holds per channel
        coded, side = pixels.rct_forward(planes), pixels.rct_forward(recon)
        return coded, side, [PlaneInfo(lo, hi) for lo, hi in pixels.rct_ranges(maxval)], "rct"
    coded, side, infos = planes, recon, []  # copied only if a plane is remapped
    for c in range(layout.channels):
        values = sparse_values(planes[c], remap_max_density) if mode == "lossless" else None
        if values is not None:
            if coded is planes:
                coded, side = planes.copy(), recon.copy()
            coded[c] = value_index(values, planes[c])
            side[c] = nearest_index(values, recon[c])
            infos.append(PlaneInfo(0, len(values) - 1, values))
        else:
            infos.append(PlaneInfo(0, maxval))
    return coded, side, infos, "none"


def decoder_side_information(recon: np.ndarray, infos: list[PlaneInfo], colour: str) -> np.ndarray:
    """The side information `coded_planes` gave the encoder, rebuilt from the decoded latents."""
    if colour == "rct":
        return pixels.rct_forward(recon)
    side = recon.copy()
    for c, info in enumerate(infos):
        if info.remap is not None:
            side[c] = nearest_index(info.remap, recon[c])
    return side


def stack_latents(latents: np.ndarray) -> np.ndarray:
    """(groups, Hp, Wp, rank) -> one plane, component grids stacked vertically."""
    groups, hp, wp, rank = latents.shape
    return latents.transpose(0, 3, 1, 2).reshape(groups * rank * hp, wp)


def sparse_values(plane: np.ndarray, max_density: float) -> np.ndarray | None:
    """The distinct values of a plane when they fill less than `max_density` of its span."""
    lo = int(plane.min())
    counts = np.bincount((plane - lo).ravel())
    used = np.flatnonzero(counts)
    if len(used) >= max_density * len(counts):
        return None
    return used + lo


def _table_pays(values: np.ndarray, x: np.ndarray) -> bool:
    """Whether a lookup table over the values' span is small (no larger than the lookups, or
    128K entries) and valid (strictly increasing values). A damaged or hostile header's remap
    table can span 2**40: the decoder then searches instead of allocating the span."""
    span = int(values[-1]) - int(values[0]) + 1
    return span <= max(x.size, 1 << 17) and bool(np.all(values[1:] > values[:-1]))


def value_index(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of each x in the sorted `values` (every x is one of them): np.searchsorted, by a
    table over the values' span where that is small (a 512x512 plane: 4 ms -> 0.5 ms)."""
    if not _table_pays(values, x):
        return np.searchsorted(values, x)
    table = np.zeros(int(values[-1] - values[0]) + 1, dtype=np.int64)
    table[values - values[0]] = np.arange(len(values))
    return table[x - values[0]]


def _nearest_index_search(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(values, x), 1, len(values) - 1) if len(values) > 1 else np.zeros_like(x)
    if len(values) > 1:
        idx = idx - ((x - values[idx - 1]) < (values[idx] - x))
    return idx


def nearest_index(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the sorted `values` entry nearest to each integer x, the upper one on a tie
    (side information in index space). Any x below values[0] maps to 0 and above values[-1]
    to the last, so x is clipped to the span and looked up in a table of the search's answers."""
    if not _table_pays(values, x):
        return _nearest_index_search(values, x)
    lo, hi = int(values[0]), int(values[-1])
    table = _nearest_index_search(values, np.arange(lo, hi + 1, dtype=np.int64))
    return table[np.clip(x, lo, hi) - lo]
