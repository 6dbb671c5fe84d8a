"""The linear low-rank core: p x p patches projected on the top-k right singular vectors.

X (patches x p*p*C) ~ U_k S_k V_k^T. A patch's latent is its projection on V_k, quantised with a
uniform step (in units of the full pixel range, so one basis serves every bit depth).

Projection and reconstruction use fixed-point integers carried in float64 matrix products:
every product and partial sum is an integer below 2**53, so BLAS computes them exactly in any
order, on any thread count or device. The reconstruction R therefore is bit-identical at
encode and decode, which the residual coder relies on (Ballé et al., ICLR 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import InvalidParameterError

FRAC_IN = 8  # fractional bits of pixels entering the projection
FRAC_BASIS = 18  # fractional bits of the projection basis
EXACT_BITS = 52  # float64 holds every integer below 2**53 exactly


@dataclass(frozen=True)
class LowRankCore:
    patch: int
    channels: int
    mean: np.ndarray  # (D,) in units of the full pixel range, D = patch * patch * channels
    basis: np.ndarray  # (D, K) orthonormal columns, by decreasing singular value

    @property
    def dim(self) -> int:
        return self.patch * self.patch * self.channels

    @property
    def max_rank(self) -> int:
        return self.basis.shape[1]

    def __post_init__(self) -> None:
        if self.patch not in (4, 8, 16, 32):
            raise InvalidParameterError(f"patch size must be 4, 8, 16 or 32, got {self.patch}")
        if self.channels not in (1, 3):
            raise InvalidParameterError(f"channels must be 1 or 3, got {self.channels}")

    def check_rank(self, rank: int) -> int:
        if not 1 <= rank <= self.max_rank:
            raise InvalidParameterError(f"rank must be from 1 to {self.max_rank}, got {rank}")
        return rank


def grid_shape(height: int, width: int, patch: int) -> tuple[int, int]:
    return -(-height // patch), -(-width // patch)


def patchify(planes: np.ndarray, patch: int) -> np.ndarray:
    """(C, H, W) -> (Hp * Wp, patch * patch * C), edge-padded to whole patches.

    Patch vectors are ordered (row, col, channel), matching `unpatchify`.
    """
    c, h, w = planes.shape
    hp, wp = grid_shape(h, w, patch)
    padded = np.pad(planes, ((0, 0), (0, hp * patch - h), (0, wp * patch - w)), mode="edge")
    blocks = padded.reshape(c, hp, patch, wp, patch).transpose(1, 3, 2, 4, 0)
    return blocks.reshape(hp * wp, patch * patch * c)


def unpatchify(patches: np.ndarray, patch: int, channels: int, height: int, width: int) -> np.ndarray:
    hp, wp = grid_shape(height, width, patch)
    blocks = patches.reshape(hp, wp, patch, patch, channels).transpose(4, 0, 2, 1, 3)
    return blocks.reshape(channels, hp * patch, wp * patch)[:, :height, :width]


def fit_svd(images: Iterable[np.ndarray], patch: int = 8, channels: int = 1, max_patches: int = 200_000,
            seed: int = 0) -> LowRankCore:
    """Fit the linear core in closed form from sample images.

    `images` are (C, H, W) float arrays scaled to [0, 1]. Returns the full basis (all D
    singular vectors); the rank used is chosen per encode.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for img in images:
        if img.ndim != 3 or img.shape[0] != channels:
            raise InvalidParameterError(f"fit_svd expects (C={channels}, H, W) arrays, got {img.shape}")
        rows.append(patchify(np.asarray(img, dtype=np.float64), patch))
    if not rows:
        raise InvalidParameterError("fit_svd needs at least one image")
    x = np.concatenate(rows)
    if len(x) > max_patches:
        x = x[rng.choice(len(x), max_patches, replace=False)]
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt.T
    # fix the sign of each vector so the fit is reproducible across LAPACK builds
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(basis.shape[1])])
    basis = basis * signs
    return LowRankCore(patch, channels, mean.astype(np.float32), basis.astype(np.float32))


def _step_units(step: float, maxval: int) -> float:
    return float(step) * maxval  # pixel values per latent unit


def project(planes: np.ndarray, core: LowRankCore, maxval: int, rank: int, step: float,
            deadzone: float = 0.0) -> np.ndarray:
    """Quantised latents (Hp, Wp, rank) of integer planes in [0, maxval].

    `deadzone` > 0 rounds magnitudes down by that fraction of a step (more zeros: fewer bits
    for slightly more error; the decoder does not need to know).
    """
    core.check_rank(rank)
    c, h, w = planes.shape
    x = patchify(planes, core.patch).astype(np.float64)
    x *= 1 << FRAC_IN  # in place: large scans
    x -= np.round(core.mean.astype(np.float64) * maxval * (1 << FRAC_IN))
    basis = np.round(core.basis[:, :rank].astype(np.float64) * (1 << FRAC_BASIS))
    acc = x @ basis  # exact: integers below 2**53
    y = acc / (_step_units(step, maxval) * (1 << (FRAC_IN + FRAC_BASIS)))
    q = np.sign(y) * np.floor(np.abs(y) + (0.5 - deadzone))
    hp, wp = grid_shape(h, w, core.patch)
    return q.astype(np.int64).reshape(hp, wp, rank)


def _reconstruction_bits(latents: np.ndarray, dim: int, step_units: float, maxval: int) -> int:
    """Fractional bits of the fixed-point reconstruction: as many as keep every sum below 2**52.

    Integer arithmetic on values both ends share (the latents), so encoder and decoder agree.
    Each term is |q| * |basis entry| * step_units * 2**frac with |basis entry| <= 1, plus the
    mean (<= maxval * 2**frac); there are dim of them.
    """
    peak = int(np.abs(latents).max(initial=0)) * (int(step_units) + 1) + maxval + 1
    return max(0, min(30, EXACT_BITS - dim.bit_length() - peak.bit_length()))


def reconstruct(latents: np.ndarray, core: LowRankCore, maxval: int, step: float, channels: int, height: int,
                width: int, device: str | None = None) -> np.ndarray:
    """Integer reconstruction (C, H, W) in [0, maxval] from quantised latents; bit-exact anywhere.

    With `device` (e.g. "cuda") the product runs in torch float64 there; the result is the same
    bits as numpy's because every intermediate is an integer below 2**53.
    """
    rank = core.check_rank(latents.shape[2])
    frac = _reconstruction_bits(latents, core.dim, _step_units(step, maxval), maxval)
    scale = _step_units(step, maxval) * 2.0**frac
    basis = np.round(core.basis[:, :rank].astype(np.float64).T * scale)
    mean = np.round(core.mean.astype(np.float64) * maxval * 2.0**frac)
    lat = latents.reshape(-1, rank).astype(np.float64)
    if device is None:
        acc = lat @ basis + mean  # exact: integers below 2**53
    else:
        import torch

        t = torch.from_numpy(lat).to(device) @ torch.from_numpy(basis).to(device) + torch.from_numpy(mean).to(device)
        acc = t.cpu().numpy()
    acc += 2.0 ** (frac - 1)  # in place: large scans
    acc /= 2.0**frac
    np.floor(acc, out=acc)
    np.clip(acc, 0, maxval, out=acc)
    planes = unpatchify(acc.astype(np.int32), core.patch, channels, height, width)
    return planes.astype(np.int64)
