"""Learned nonlinear decoder layers that refine the linear reconstruction (preview and lossy).

A small residual CNN on the reconstruction scaled to [0, 1]: out = x + body(x). Its last
convolution starts at zero, so an untrained refiner is exactly the identity. It runs only on
lossy outputs (preview, lossy mode); lossless and near-lossless decoding never depend on it,
which keeps them bit-exact on any device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Refiner(nn.Module):
    def __init__(self, channels: int = 1, width: int = 32, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
            c_in = width
        last = nn.Conv2d(c_in, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)
        self.channels, self.width, self.depth = channels, width, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def is_identity(self) -> bool:
        """True while the last layer is a plain all-zero conv: then forward(x) == x exactly.

        (A layer wrapped by a LoRA adapter is never taken as zero.)"""
        last = self.body[-1]
        if not isinstance(last, nn.Conv2d):
            return False
        return not bool(last.weight.any()) and not bool(last.bias.any())


@torch.no_grad()
def refine_planes(refiner: Refiner, planes: np.ndarray, maxval: int, device: str = "cpu") -> np.ndarray:
    """Apply the refiner to integer planes (C, H, W); returns integer planes in [0, maxval].

    Planes are processed in groups of the refiner's channel count, as one batch.
    """
    if refiner.is_identity():
        return planes
    c, h, w = planes.shape
    group = refiner.channels
    x = torch.from_numpy(planes.astype(np.float32) / maxval).reshape(c // group, group, h, w).to(device)
    y = refiner(x).reshape(c, h, w).cpu().numpy().astype(np.float64)
    return np.clip(np.rint(y * maxval), 0, maxval).astype(np.int64)
