"""LoRA: low-rank updates W + s * B A on Linear, Conv2d and ConvTranspose2d layers.

s = alpha / r, or alpha / sqrt(r) with rsLoRA. Shapes follow peft (and kohya's down/up):
    Linear           A (r, in)                B (out, r)
    Conv2d           A (r, in, kh, kw)        B (out, r, 1, 1)   A is a conv with the base's
                                                                  stride/padding/dilation
    ConvTranspose2d  A (in, r, kh, kw)        B (r, out, 1, 1)   A a transposed conv like the base
Several adapters can be active at once, each with a weight; switching them never touches the
base weights. merge() folds the active adapters into the base weight after checking for
NaN/Inf, and unmerge() restores the original tensor exactly (it keeps a copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


@dataclass
class LoraWeights:
    """One adapter's update for one layer."""

    a: torch.Tensor
    b: torch.Tensor
    alpha: float
    use_rslora: bool = False

    def scale(self, rank: int) -> float:
        return self.alpha / (rank**0.5 if self.use_rslora else rank)


def lora_rank(layer: nn.Module, w: LoraWeights) -> int:
    return w.a.shape[1] if isinstance(layer, nn.ConvTranspose2d) else w.a.shape[0]


def expected_shapes(layer: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(layer, nn.Linear):
        return (rank, layer.in_features), (layer.out_features, rank)
    if isinstance(layer, nn.Conv2d):
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    if isinstance(layer, nn.ConvTranspose2d):
        return (layer.in_channels, rank, *layer.kernel_size), (rank, layer.out_channels, 1, 1)
    raise WeightsError(f"LoRA supports {', '.join(t.__name__ for t in SUPPORTED)}, not {type(layer).__name__}")


def delta_weight(layer: nn.Module, w: LoraWeights) -> torch.Tensor:
    """s * B A in the shape of the layer's weight."""
    rank = lora_rank(layer, w)
    s = w.scale(rank)
    if isinstance(layer, nn.Linear):
        return s * (w.b @ w.a)
    if isinstance(layer, nn.Conv2d):
        out = w.b.flatten(1) @ w.a.flatten(1)
        return s * out.view(layer.out_channels, layer.in_channels, *layer.kernel_size)
    # ConvTranspose2d: weight (in, out, kh, kw); delta[i, o] = sum_r A[i, r] B[r, o]
    out = torch.einsum("irhw,ro->iohw", w.a, w.b[:, :, 0, 0])
    return s * out


class LoraLayer(nn.Module):
    """Wraps a base layer; holds any number of named adapters and their active weights."""

    def __init__(self, base: nn.Module):
        super().__init__()
        if not isinstance(base, SUPPORTED) or getattr(base, "groups", 1) != 1:
            raise WeightsError(f"LoRA cannot wrap {base!r} (supported: Linear, Conv2d, ConvTranspose2d, groups=1)")
        self.base = base
        self.adapters: dict[str, LoraWeights] = {}
        self.active: dict[str, float] = {}
        self._original: torch.Tensor | None = None

    @property
    def merged(self) -> bool:
        return self._original is not None

    def add(self, name: str, w: LoraWeights) -> None:
        a_shape, b_shape = expected_shapes(self.base, lora_rank(self.base, w))
        if tuple(w.a.shape) != a_shape or tuple(w.b.shape) != b_shape:
            raise WeightsError(f"adapter {name!r}: A {tuple(w.a.shape)} / B {tuple(w.b.shape)} do not fit "
                               f"{self.base!r} (expected A {a_shape}, B {b_shape})")
        device, dtype = self.base.weight.device, self.base.weight.dtype
        self.adapters[name] = LoraWeights(w.a.to(device, dtype), w.b.to(device, dtype), w.alpha, w.use_rslora)

    def branch(self, x: torch.Tensor, w: LoraWeights) -> torch.Tensor:
        s = w.scale(lora_rank(self.base, w))
        base = self.base
        if isinstance(base, nn.Linear):
            return s * F.linear(F.linear(x, w.a), w.b)
        if isinstance(base, nn.Conv2d):
            h = F.conv2d(x, w.a, None, base.stride, base.padding, base.dilation)
            return s * F.conv2d(h, w.b)
        h = F.conv_transpose2d(x, w.a, None, base.stride, base.padding, base.output_padding, 1, base.dilation)
        return s * F.conv_transpose2d(h, w.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        for name, weight in self.active.items():
            if weight:
                y = y + weight * self.branch(x, self.adapters[name])
        return y

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        delta = torch.zeros_like(self.base.weight)
        for name, weight in self.active.items():
            delta += weight * delta_weight(self.base, self.adapters[name])
        if not torch.isfinite(delta).all():
            raise WeightsError(f"refusing to merge: active adapters {sorted(self.active)} give NaN or Inf")
        self._original = self.base.weight.detach().clone()
        self.base.weight += delta

    @torch.no_grad()
    def unmerge(self) -> None:
        if self._original is not None:
            self.base.weight.copy_(self._original)
            self._original = None


def attach(root: nn.Module, name: str, layers: dict[str, LoraWeights]) -> None:
    """Add adapter `name` (module path -> weights) to `root`, wrapping layers as needed.

    Every problem (unknown module, unsupported layer, wrong shape) is reported at once.
    """
    modules = dict(root.named_modules())
    problems = []
    for path, w in layers.items():
        target = modules.get(path)
        if target is None:
            problems.append(f"no module {path!r} in the model")
            continue
        if isinstance(target, LoraLayer):
            layer = target
        else:
            try:
                layer = LoraLayer(target)
            except WeightsError as exc:
                problems.append(str(exc))
                continue
            _replace(root, path, layer)
            modules[path] = layer
        try:
            layer.add(name, w)
        except WeightsError as exc:
            problems.append(f"{path}: {exc}")
    if problems:
        raise WeightsError(f"adapter {name!r} does not fit the model: " + "; ".join(problems))


def set_active(root: nn.Module, weights: dict[str, float]) -> None:
    """Activate adapters by name with weights (others off) on every LoRA layer; no base reload."""
    for layer in lora_layers(root):
        if layer.merged:
            raise WeightsError("unmerge adapters before switching them")
        layer.active = {n: float(w) for n, w in weights.items() if n in layer.adapters}


def lora_layers(root: nn.Module) -> list[LoraLayer]:
    return [m for m in root.modules() if isinstance(m, LoraLayer)]


def merge(root: nn.Module) -> None:
    for layer in lora_layers(root):
        layer.merge()


def unmerge(root: nn.Module) -> None:
    for layer in lora_layers(root):
        layer.unmerge()


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)
