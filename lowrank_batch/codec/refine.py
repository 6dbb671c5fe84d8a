"""Learned nonlinear decoder layers that refine the linear reconstruction (preview and lossy).

A small residual CNN on the reconstruction scaled to [0, 1]: out = x + body([x, cond, grid]).
The condition planes tell it how coarse the latents were (their quantisation step and the share
of the basis kept), since blocking and ringing scale with both; the grid planes give each
pixel's position inside its patch, since the errors of a block transform sit at block edges.
Its last convolution starts at zero, so an untrained refiner is exactly the identity. It runs
only on lossy outputs (preview, lossy mode); lossless and near-lossless decoding never depend on
it, which keeps them bit-exact on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

COND_CHANNELS = 2  # -log2(step) / 12 and rank / max_rank, as constant planes
DETAIL_CLIP = 16.0  # local detail beyond 16 steps is an edge, not an artefact: clipped


def condition(step: float, rank_fraction: float) -> tuple[float, float]:
    """The refiner's side inputs for latents quantised with `step` (fraction of the pixel range)."""
    return -math.log2(max(step, 1e-6)) / 12.0, float(rank_fraction)


class Refiner(nn.Module):
    def __init__(self, channels: int = 1, width: int = 32, depth: int = 3, cond_channels: int = COND_CHANNELS,
                 grid: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels + cond_channels + (2 if grid else 0)
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
            c_in = width
        last = nn.Conv2d(c_in, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)
        self.channels, self.width, self.depth, self.cond_channels = channels, width, depth, cond_channels
        self.grid = grid  # patch size of the latent grid (0: no position planes)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, channels, H, W) in [0, 1]; cond (N, cond_channels) per image, from `condition`.

        With a condition the network works in units of the latent step: it sees the local
        detail of x divided by the step and returns a correction in steps, so one set of
        weights serves every bit depth, dynamic range and quality.
        """
        n, _, h, w = x.shape
        if not self.cond_channels:
            return x + self.body(x)
        if cond is None:
            raise ValueError("this refiner needs the latent condition (step, rank fraction)")
        step = torch.exp2(-12.0 * cond[:, :1].to(x.dtype))[:, :, None, None]  # inverse of `condition`
        local_mean = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        detail = torch.clamp((x - local_mean) / step, -DETAIL_CLIP, DETAIL_CLIP) / DETAIL_CLIP
        inputs = [detail, cond[:, :, None, None].to(x.dtype).expand(-1, -1, h, w)]
        if self.grid:
            rows = (torch.arange(h, device=x.device) % self.grid).to(x.dtype) / (self.grid - 1)
            cols = (torch.arange(w, device=x.device) % self.grid).to(x.dtype) / (self.grid - 1)
            inputs += [rows[None, None, :, None].expand(n, 1, h, w), cols[None, None, None, :].expand(n, 1, h, w)]
        return x + step * self.body(torch.cat(inputs, dim=1))

    def untrained_like(self) -> "Refiner":
        """A fresh refiner of the same shape: exactly the identity (for the linear baseline, probes)."""
        return Refiner(self.channels, self.width, self.depth, self.cond_channels, self.grid)

    def is_identity(self) -> bool:
        """True while the last layer is a plain all-zero conv: then forward(x) == x exactly.

        (A layer wrapped by a LoRA adapter is never taken as zero.)"""
        last = self.body[-1]
        if not isinstance(last, nn.Conv2d):
            return False
        return not bool(last.weight.any()) and not bool(last.bias.any())


@torch.no_grad()
def refine_planes(refiner: Refiner, planes: np.ndarray, maxval: int, step: float | list[float] = 1.0,
                  rank_fraction: float | list[float] = 1.0, device: str = "cpu") -> np.ndarray:
    """Apply the refiner to integer planes (C, H, W); returns integer planes in [0, maxval].

    Planes are processed in groups of the refiner's channel count, as one batch; `step` and
    `rank_fraction` are one value, or one per group (a batch of different images).
    """
    if refiner.is_identity():
        return planes
    c, h, w = planes.shape
    group = refiner.channels
    n = c // group
    steps = step if isinstance(step, list) else [step] * n
    fractions = rank_fraction if isinstance(rank_fraction, list) else [rank_fraction] * n
    cond = torch.tensor([condition(s, f) for s, f in zip(steps, fractions)], dtype=torch.float32, device=device)
    x = torch.from_numpy(planes.astype(np.float32) / maxval).reshape(n, group, h, w).to(device)
    y = refiner(x, cond).reshape(c, h, w).cpu().numpy().astype(np.float64)
    return np.clip(np.rint(y * maxval), 0, maxval).astype(np.int64)
