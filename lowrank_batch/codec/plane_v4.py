"""Format 4's plane encoder: format 3's strips, each coded as one range-coder stream in coding
order, with intensity bands chosen by trial (FORMAT.md, version 4).

Intensity bands split every context bucket by the brightness of the pixel's W and N neighbours
(context_model._value_class), because noise follows intensity: photon counts in a radiograph,
tissue against air in CT. The model pass does not depend on them, so the encoder runs it once
and tries band counts on its tokens with the coder's own histogram rules
(residual_coder.histogram_pass); the decoder only reads the chosen thresholds.
"""

from __future__ import annotations

import numpy as np

from . import context_model as cm
from . import band_kernels as bk
from .residual_coder import (NO_THRESHOLDS, V4_TABLES, ContextTables, ModelPass, activity_levels, checked_strip_rows,
                             histogram_pass, in_order_stream, model_pass, strip_count, with_bands, with_value_classes)
from .threads import run_all
from .varint import write_varint

BAND_CANDIDATES = (2, 4, 8)  # format 4: the intensity band counts the encoder tries
BAND_TRIAL_PIXELS = 1 << 20  # ... on about this many pixels of a plane
BAND_SAMPLE = 1 << 16  # ... with thresholds from quantiles of about this many pixels
# ... and keeps them only if they save this fraction of the plane's bits (CodecConfig.band_min_gain)
BAND_MIN_GAIN = 0.01


def band_thresholds(ordered: np.ndarray, bands: int) -> np.ndarray:
    """Thresholds that cut the sorted values `ordered` into `bands` bands of about equal counts
    (fewer where values repeat); empty if they cannot be cut. The cut points are
    np.quantile(..., method="lower")'s, taken from one sort that every band count shares."""
    if ordered.size == 0:
        return NO_THRESHOLDS
    at = np.floor((ordered.size - 1) * (np.arange(1, bands) / bands)).astype(np.intp)
    thresholds = np.unique(ordered[at].astype(np.int64))
    return thresholds[thresholds > ordered[0]]


def choose_value_classes(passes: list[ModelPass], tables: ContextTables,
                         min_gain: float = BAND_MIN_GAIN) -> tuple[np.ndarray | None, list[ModelPass]]:
    """Format 4: the intensity bands (thresholds) that code a plane's strips smallest by the
    coder's own bit count, header included, or None; and the strips' passes with them. Band
    counts are tried in increasing order until one does no better, and the best is kept if it
    saves at least `min_gain` of the bits. Bands pay on large radiographs (RG3: -2.2%), little
    on CT or MR. (A quick entropy estimate instead of the exact count misranked them by 0.1-0.5%.)"""
    # the trials run on the first strips, about BAND_TRIAL_PIXELS of them (a 3.6 MP radiograph
    # in 4 strips: its first 2); the bands chosen then code every strip
    trial = 1
    while trial < len(passes) and sum(mp.tokens.size for mp in passes[:trial]) < BAND_TRIAL_PIXELS:
        trial += 1
    band_values = [bk._band_values(mp.values) for mp in passes]
    # thresholds from the pixels with some activity (flat background would put them all at 0),
    # a regular sample of at most BAND_SAMPLE of them
    active = np.concatenate([v[activity_levels(mp.buckets, tables) > 0] for v, mp in zip(band_values[:trial], passes)])
    active = active[:: max(1, active.size // BAND_SAMPLE)]
    ordered = np.sort(active)
    candidates = [t for t in (band_thresholds(ordered, bands) for bands in BAND_CANDIDATES) if t.size]
    if not _bands_may_pay(passes[:trial], band_values, candidates, tables, min_gain):
        return None, passes
    best, best_trials = None, passes[:trial]
    plain_bits = best_bits = sum(map(model_bits, passes[:trial])) >> bk.LOG2_SHIFT
    for thresholds in candidates:
        band_tables = with_value_classes(tables, thresholds)
        banded = [histogram_pass(mp, bk._banded(mp.buckets, v, thresholds), band_tables)
                  for mp, v in zip(passes[:trial], band_values)]
        bits = (sum(c for _, c in banded) >> bk.LOG2_SHIFT) + 8 * (1 + 3 * thresholds.size)  # + header, about
        if bits >= best_bits:
            break
        best, best_bits, best_trials = thresholds, bits, [mp for mp, _ in banded]
    if best is None or best_bits > plain_bits * (1 - min_gain):
        return None, passes
    band_tables = with_value_classes(tables, best)
    rest = [histogram_pass(mp, bk._banded(mp.buckets, v, best), band_tables)[0]
            for mp, v in zip(passes[trial:], band_values[trial:])]
    return best, best_trials + rest


def _bands_may_pay(passes: list[ModelPass], band_values: list[np.ndarray], candidates: list[np.ndarray],
                   tables: ContextTables, min_gain: float) -> bool:
    """Whether a quick entropy estimate (a few ns per pixel, against ~25 for the exact count)
    gives any of the candidate bands at least 3/4 of `min_gain`: most CT and MR planes stop here."""
    edges = np.unique(np.concatenate([NO_THRESHOLDS, *candidates])).astype(np.int64)
    # row 0: no bands; row k: candidate k's band of each edge band (its count of thresholds at or below the band)
    lower = np.concatenate(([np.iinfo(np.int64).min], edges))
    band_maps = np.array([np.zeros(edges.size + 1, dtype=np.int64)]
                         + [np.searchsorted(t, lower, side="right") for t in candidates], dtype=np.int64)
    estimates = sum(bk._static_bits_by_bands(mp.buckets, v, edges, band_maps, mp.tokens, tables.num_buckets,
                                             cm.NUM_TOKENS, bk.LOG2_TABLE)
                    for mp, v in zip(passes, band_values))
    plain, *banded = (int(e) for e in estimates)
    return any(e < plain * (1 - 0.75 * min_gain) for e in banded)


def model_bits(mp: ModelPass) -> int:
    """The tokens' cost under their snapshots, as `histogram_pass` counts it (2**-16 bits)."""
    return int(bk._model_bits(mp.tokens, mp.snaps, mp.snapshots, bk.LOG2_TABLE))


def encode_plane_v4(
    plane: np.ndarray, lo: int, hi: int, delta: int = 0, side: np.ndarray | None = None, patch: int = 8,
    tables: ContextTables = V4_TABLES, strips: int | None = None, threads: int | None = 1, choose_bands: bool = True,
    band_min_gain: float = BAND_MIN_GAIN,
) -> tuple[bytes, np.ndarray, np.ndarray | None]:
    """Format 4's plane stream: format 3's strips, each a layout-2 stream, with intensity bands
    (`tables.value_thresholds`, or chosen here when `choose_bands`). Returns the stream, the
    decoded values and the thresholds used (None: no bands)."""
    height, width = plane.shape
    rows = checked_strip_rows(height, strips or strip_count(height, width), patch)

    def task(r0: int, r1: int):
        return lambda: model_pass(plane[r0:r1], lo, hi, delta, None if side is None else side[r0:r1], patch, tables)

    passes = run_all([task(*r) for r in rows], threads)
    thresholds = tables.value_thresholds if tables.value_thresholds.size else None
    if thresholds is not None:
        passes = [with_bands(mp, tables) for mp in passes]
    elif choose_bands:
        thresholds, passes = choose_value_classes(passes, tables, band_min_gain)
    out = bytearray()
    write_varint(out, len(rows))
    for mp in passes:
        blob = in_order_stream(mp)
        write_varint(out, len(blob))
        out += blob
    return bytes(out), np.concatenate([mp.values for mp in passes]), thresholds
