"""Training pairs for the learned layers: (reconstruction from quantised latents, original).

A pair is a random crop of a corpus image's training region, aligned to the latent grid and
turned by one of the 8 flips/rotations (augmentation), then encoded through the codec's own
projection and reconstruction (`Codec.refiner_inputs`), so the refiner sees exactly what the
decoder will give it. Settings are drawn per pair: the lossless preview (rank 4, coarse step)
or lossy at a quality drawn uniformly from QUALITY_RANGE dB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codec.codec import Codec
from ..codec.refine import condition
from .corpus import CorpusEntry

QUALITY_RANGE = (32.0, 56.0)
PREVIEW_SHARE = 0.3


@dataclass
class Batch:
    recon: np.ndarray  # (N, 1, S, S) float32 in [0, 1]
    target: np.ndarray  # (N, 1, S, S) float32 in [0, 1]
    cond: np.ndarray  # (N, 2) float32: the refiner's condition
    quality: np.ndarray  # (N,) dB, or 0 for a preview


def _crop(rng: np.random.Generator, entry: CorpusEntry, image: np.ndarray, size: int, val: bool) -> np.ndarray | None:
    h, w = image.shape[:2]
    lo, hi = (entry.val_from_col, w) if val else (0, entry.val_from_col)
    if h < size or hi - lo < size:
        return None
    top = int(rng.integers(0, (h - size) // 16 + 1)) * 16
    left = lo + int(rng.integers(0, (hi - lo - size) // 16 + 1)) * 16
    crop = image[top : top + size, left : left + size]
    if crop.ndim == 3:  # one colour plane per pair: the refiner works plane by plane
        crop = crop[..., int(rng.integers(0, crop.shape[2]))] if not val else crop[..., 0]
    k = int(rng.integers(0, 8))
    crop = np.rot90(crop, k % 4)
    return np.ascontiguousarray(crop[:, ::-1] if k >= 4 else crop)


def make_batch(codec: Codec, images: list[tuple[CorpusEntry, np.ndarray]], rng: np.random.Generator,
               batch: int, size: int, val: bool = False) -> Batch:
    """`batch` pairs from random images of `images` (their training region, or validation)."""
    recons, targets, conds, qualities = [], [], [], []
    eligible = [(e, a) for e, a in images if _crop_fits(e, a, size, val)]
    if not eligible:
        raise ValueError(f"no image has a {'validation' if val else 'training'} region of {size}x{size}")
    while len(recons) < batch:
        entry, image = eligible[int(rng.integers(0, len(eligible)))]
        crop = _crop(rng, entry, image, size, val)
        if crop is None or crop.max() == crop.min():  # a flat crop teaches nothing
            continue
        preview = rng.random() < PREVIEW_SHARE
        quality = 0.0 if preview else float(rng.uniform(*QUALITY_RANGE))
        mode = "lossless" if preview else "lossy"
        recon, target, step, fraction = codec.refiner_inputs(crop, entry.bits_stored, mode, quality or None)
        maxval = (1 << entry.bits_stored) - 1
        recons.append(recon[:1] / maxval)
        targets.append(target[:1] / maxval)
        conds.append(condition(step, fraction))
        qualities.append(quality)
    return Batch(np.stack(recons).astype(np.float32), np.stack(targets).astype(np.float32),
                 np.asarray(conds, dtype=np.float32), np.asarray(qualities))


def _crop_fits(entry: CorpusEntry, image: np.ndarray, size: int, val: bool) -> bool:
    width = image.shape[1] - entry.val_from_col if val else entry.val_from_col
    return image.shape[0] >= size and width >= size
