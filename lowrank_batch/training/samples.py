"""Training pairs for the learned layers: (reconstruction from quantised latents, original).

A pair is a random crop of a corpus image's training region (modalities drawn evenly), aligned
to the latent grid and turned by one of the 8 flips/rotations (augmentation), then encoded through the codec's own
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


def _crop(rng: np.random.Generator, entry: CorpusEntry, image: np.ndarray, size: int, val: bool,
          patch: int) -> np.ndarray | None:
    """A crop of the region, aligned to the latent grid (as whole images are), turned by one
    of the 8 flips/rotations; colour crops keep their 3 channels."""
    h, w = image.shape[:2]
    lo, hi = (entry.val_from_col, w) if val else (0, entry.val_from_col)
    if h < size or hi - lo < size:
        return None
    top = int(rng.integers(0, (h - size) // patch + 1)) * patch
    left = lo + int(rng.integers(0, (hi - lo - size) // patch + 1)) * patch
    crop = image[top : top + size, left : left + size]
    k = int(rng.integers(0, 8))
    crop = np.rot90(crop, k % 4)
    return np.ascontiguousarray(crop[:, ::-1] if k >= 4 else crop)


def make_batch(codec: Codec, images: list[tuple[CorpusEntry, np.ndarray]], rng: np.random.Generator,
               batch: int, size: int, val: bool = False, max_tries: int = 1000) -> Batch:
    """`batch` pairs from `images` (their training region, or validation).

    Each pair draws a modality first, then an image of it, so a modality with one image (xray)
    weighs as much as one with twenty. A colour crop is encoded as colour (RGB planes for the
    preview, YCoCg for lossy, as encode does) and one of its planes becomes the pair.
    """
    recons, targets, conds, qualities = [], [], [], []
    by_modality: dict[str, list] = {}
    for e, a in images:
        if _crop_fits(e, a, size, val):
            by_modality.setdefault(e.modality, []).append((e, a))
    if not by_modality:
        raise ValueError(f"no image has a {'validation' if val else 'training'} region of {size}x{size}")
    modalities = sorted(by_modality)
    patch = codec.model.core.patch
    tries = 0
    while len(recons) < batch:
        tries += 1
        if tries > max_tries:
            raise ValueError(f"no usable crops after {max_tries} tries (are the images flat?)")
        group = by_modality[modalities[int(rng.integers(0, len(modalities)))]]
        entry, image = group[int(rng.integers(0, len(group)))]
        crop = _crop(rng, entry, image, size, val, patch)
        if crop is None or crop.max() == crop.min():  # a flat crop teaches nothing
            continue
        preview = rng.random() < PREVIEW_SHARE
        quality = 0.0 if preview else float(rng.uniform(*QUALITY_RANGE))
        mode = "lossless" if preview else "lossy"
        recon, target, step, fraction = codec.refiner_inputs(crop, entry.bits_stored, mode, quality or None)
        plane = int(rng.integers(0, recon.shape[0]))
        maxval = (1 << entry.bits_stored) - 1
        recons.append(recon[plane : plane + 1] / maxval)
        targets.append(target[plane : plane + 1] / maxval)
        conds.append(condition(step, fraction))
        qualities.append(quality)
    return Batch(np.stack(recons).astype(np.float32), np.stack(targets).astype(np.float32),
                 np.asarray(conds, dtype=np.float32), np.asarray(qualities))


def _crop_fits(entry: CorpusEntry, image: np.ndarray, size: int, val: bool) -> bool:
    width = image.shape[1] - entry.val_from_col if val else entry.val_from_col
    return image.shape[0] >= size and width >= size
