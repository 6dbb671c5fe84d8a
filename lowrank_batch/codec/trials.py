"""The encoder's choices made by trial: code a central crop both ways and keep the smaller.

Whether a plane is coded as indices into its used values, whether its fitted linear predictor
joins the blend (format 3), and whether the predictors guided by the latent reconstruction pay.
Pure functions of the pixels; the decoder never runs them (it reads the choices in the header).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .plane_header import PlaneInfo, remap_table_bytes
from .context_model import LIN_PARITY_CLASSES
from .linear_fit import (as_class_table, fit_linear_predictor, fit_parity_predictor, fit_samples,
                         narrow_and_wide_samples, parity_errors_differ)
from .residual_coder import V3_TABLES, ContextTables, encode_plane

LINEAR_HEADER_BYTES = 15  # what a plane's linear predictor weights cost in the header, about
WIDE_LINEAR_HEADER_BYTES = 24  # format 5's 16 taps
# format 4: a weight set per position parity is tried where its fit's absolute error is this
# much smaller than one set's (dev corpus: 18-20% on the interpolated enhanced CT, <= 2.6% elsewhere)
PARITY_MIN_FIT_GAIN = 0.05


def trial_crop(shape: tuple[int, int], size: int, patch: int) -> tuple[slice, slice]:
    """A central crop of whole patches, `size` on a side (at most)."""
    h, w = shape
    top = (max(0, h - size) // 2) // patch * patch
    left = (max(0, w - size) // 2) // patch * patch
    return slice(top, top + size), slice(left, left + size)


def coded_size(plane: np.ndarray, info: PlaneInfo, delta: int, tables: ContextTables, side=None,
               patch: int = 8) -> int:
    return len(encode_plane(plane, info.lo, info.hi, delta, side, patch, tables)[0])


def remap_pays(plane: np.ndarray, indices: np.ndarray, info: PlaneInfo, maxval: int,
               crop: tuple[slice, slice], tables: ContextTables = V3_TABLES) -> tuple[bool, int]:
    """Format 3: whether coding a plane as indices into its used values saves more than its
    table costs in the header (the crop's saving, scaled to the plane); and the indices' crop
    size. Tables of scattered values (a 64^2 MR using 1,128 of 2,019 values) can cost more
    than they save."""
    as_indices = coded_size(indices[crop], info, 0, tables)
    as_values = coded_size(plane[crop], PlaneInfo(0, maxval), 0, tables)
    scale = plane.size / indices[crop].size
    return (as_values - as_indices) * scale > len(remap_table_bytes(info.remap)[1]), as_indices


def fitted_linear_predictor(plane: np.ndarray, info: PlaneInfo, delta: int, crop: tuple[slice, slice],
                            without_bytes: int | None = None, tables: ContextTables = V3_TABLES,
                            parity: bool = False, wide: bool = False) -> tuple[np.ndarray | None, int | None]:
    """Format 3: the plane's fitted linear predictor if it makes the crop smaller by more than
    its header bytes (it helps MR most, and rarely pays on small or flat planes).
    `without_bytes`: the crop's size without it, when a trial already coded it.
    `parity` (format 4): also try one weight set per position parity, where its fit is clearly
    better (an interpolated image); returns (taps,) or (LIN_PARITY_CLASSES, taps) weights.
    `wide` (format 5): also try one set of 16 taps (LIN_TAPS_WIDE), which suits the
    textured CT and MR planes best (interpolated images keep their parity sets).
    Also returns the crop's size as chosen (header not counted), None where no trial coded it:
    the guidance trial on the same crop needs that size for its unguided side."""
    samples, wide_samples = narrow_and_wide_samples(plane) if wide else (fit_samples(plane), None)
    weights = fit_linear_predictor(plane, samples)
    if not weights.any():
        return None, without_bytes
    if without_bytes is None:
        without_bytes = coded_size(plane[crop], info, delta, tables)
    best, best_bytes, best_crop = None, without_bytes, without_bytes
    with_linear = coded_size(plane[crop], info, delta, dataclasses.replace(tables, lin=as_class_table(weights)))
    if with_linear + LINEAR_HEADER_BYTES < best_bytes:
        best, best_bytes, best_crop = weights, with_linear + LINEAR_HEADER_BYTES, with_linear
    if parity and (not wide or parity_errors_differ(samples)):  # format 5 screens first
        by_parity, fit_gain = fit_parity_predictor(plane, samples)
        if fit_gain >= PARITY_MIN_FIT_GAIN:
            size = coded_size(plane[crop], info, delta, dataclasses.replace(tables, lin=by_parity))
            if size + LIN_PARITY_CLASSES * LINEAR_HEADER_BYTES < best_bytes:
                best, best_bytes, best_crop = by_parity, size + LIN_PARITY_CLASSES * LINEAR_HEADER_BYTES, size
    if wide:
        wide_weights = fit_linear_predictor(plane, wide_samples)
        if wide_weights.any():
            size = coded_size(plane[crop], info, delta, dataclasses.replace(tables, lin=as_class_table(wide_weights)))
            # the crop's saving scaled to the plane against the extra header bytes (the rules
            # above, frozen with formats 3-4, leave it unscaled: the 512^2 CT's centre saves 8
            # bytes of 5 KB, the whole plane 0.8%)
            scale = plane.size / plane[crop].size
            header = best_bytes - best_crop  # of the best so far (0: none)
            if (best_crop - size) * scale > WIDE_LINEAR_HEADER_BYTES - header:
                best, best_crop = wide_weights, size
    return best, best_crop


def guidance_helps(plane: np.ndarray, side: np.ndarray, info: PlaneInfo, delta: int, tables: ContextTables,
                   crop: tuple[slice, slice], patch: int, min_gain: float = 0.0,
                   unguided_bytes: int | None = None) -> bool:
    """Whether predictors guided by the reconstruction pay off on this plane: the crop coded
    with them is smaller, by at least `min_gain` of it (format 4: CodecConfig.guidance_min_gain).
    On the crop they save up to 0.75% on photographs and lose up to 2.6% on CT.
    `unguided_bytes`: the crop's size without them, when a trial already coded it (the same
    crop and tables)."""
    guided = coded_size(plane[crop], info, delta, tables, side[crop], patch)
    unguided = unguided_bytes if unguided_bytes is not None else coded_size(plane[crop], info, delta, tables,
                                                                             None, patch)
    return guided < unguided and guided <= unguided * (1 - min_gain)
