"""Training the base codec and per-modality LoRA adapters.

Objective. What users pay for is L = R_lossless + lambda * D_preview: the bits of the latents
and the residual of a lossless file, plus the distortion of the preview / lossy decode. The
parameters trained here (the refiner and its adapters) are on the decoder side and, by design,
off the exact path: lossless and near-lossless decoding never run them, so dR/dtheta = 0 and
the rate is fixed by the closed-form core and the adaptive coder. The trained term is therefore
the distortion at the rates the exact encoder produces: the mean PSNR gain in dB of the refined
reconstruction over the linear one, on pairs drawn over lossy qualities 32-56 dB and the
lossless preview (samples.py). The mean of log-MSE (not MSE) keeps fine qualities from being
drowned by coarse ones. R is measured on the validation split by the real coder (evaluate.py).

Base = SVD core fitted in closed form on the corpus's training regions + the refiner trained
from scratch. Adapter = LoRA (rank r) on every refiner convolution, the base frozen.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..codec import lora, lowrank, pixels
from ..codec.codec import Codec
from ..codec.loaded import LowRankModel
from ..codec.refine import Refiner
from ..errors import InvalidParameterError
from ..weights.adapters import Adapter
from .corpus import MODALITIES, load_images
from .samples import Batch, make_batch

VAL_CROP = 48  # validation strips are a quarter of each image: narrow ones still give 48-pixel crops


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    batch: int = 24
    crop: int = 64
    lr: float = 2e-3
    seed: int = 0
    width: int = 32  # refiner (base only)
    depth: int = 4
    lora_rank: int = 4  # adapters only
    lora_alpha: float = 4.0
    patch: int = 16
    val_every: int = 250
    val_pairs: int = 96
    # mean of per-crop dB gains; "pooled": the set's gain per quality (measured: ~0 after 700 steps)
    loss: str = "per-pair"

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "crop", "width", "depth", "lora_rank", "val_every", "val_pairs"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.loss not in ("pooled", "per-pair"):
            raise InvalidParameterError(f"loss must be 'pooled' or 'per-pair', got {self.loss!r}")
        if self.crop % self.patch:
            raise InvalidParameterError(f"crop must be a multiple of the patch size {self.patch}, got {self.crop}")


Progress = Callable[[str], None]


def psnr_gain_loss(out: torch.Tensor, recon: torch.Tensor, target: torch.Tensor,
                   step: torch.Tensor | None = None) -> torch.Tensor:
    """Minus the PSNR gain (dB) of `out` over `recon` on pairs (N, C, H, W) in [0, 1].

    With `step` (N,), the pooled gain: the errors of all pairs summed, each pair's weighted by
    1 / step**2 so that every quality counts alike - the set-level PSNR the evaluation reports,
    where big errors weigh as they do in an archive. Without, the mean of per-pair gains."""
    eps = 1e-12
    mse_out = ((out - target) ** 2).mean(dim=(1, 2, 3))
    mse_in = ((recon - target) ** 2).mean(dim=(1, 2, 3))
    if step is None:
        return (10.0 * torch.log10((mse_out + eps) / (mse_in + eps))).mean()
    w = 1.0 / step.to(out.dtype) ** 2
    return 10.0 * torch.log10(((w * mse_out).sum() + eps) / ((w * mse_in).sum() + eps))


def _loss(refiner: Refiner, recon, target, cond, pooled: bool) -> torch.Tensor:
    step = torch.exp2(-12.0 * cond[:, 0]) if pooled else None  # inverse of refine.condition
    return psnr_gain_loss(refiner(recon, cond), recon, target, step)


def _tensors(batch: Batch, device: str):
    return (torch.from_numpy(batch.recon).to(device), torch.from_numpy(batch.target).to(device),
            torch.from_numpy(batch.cond).to(device))


@torch.no_grad()
def _val_gain(refiner: Refiner, pairs: list[Batch], device: str, pooled: bool) -> float:
    """Mean PSNR gain (dB) on fixed validation pairs."""
    refiner.eval()
    gains = [-float(_loss(refiner, r, t, c, pooled)) for r, t, c in (_tensors(b, device) for b in pairs)]
    refiner.train()
    return float(np.mean(gains))


def fit_core(images, patch: int, seed: int) -> lowrank.LowRankCore:
    """The linear core in closed form from the training regions only."""
    samples = []
    for entry, a in images:
        layout = pixels.validate(a, entry.bits_stored)
        planes = pixels.to_planes(a, layout)[:, :, : entry.val_from_col] / layout.maxval
        samples += [planes[c : c + 1] for c in range(planes.shape[0])]
    return lowrank.fit_svd(samples, patch=patch, channels=1, seed=seed)


def _seed(seed: int) -> np.random.Generator:
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (ignored on CPU)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def _loop(refiner: Refiner, params: list[torch.Tensor], codec: Codec, images, config: TrainConfig,
          rng: np.random.Generator, device: str, progress: Progress) -> dict:
    """The optimisation loop shared by base and adapter training; returns its figures."""
    val_rng = np.random.default_rng(config.seed + 1)  # fixed validation pairs, independent of training
    val_pairs = [make_batch(codec, images, val_rng, min(config.batch, config.val_pairs), VAL_CROP, val=True)
                 for _ in range(max(1, config.val_pairs // config.batch))]
    optimiser = torch.optim.Adam(params, lr=config.lr)
    warmup = max(1, config.steps // 20)  # short warm-up, then cosine decay to zero
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(k, config.steps) / config.steps)))
    start = time.perf_counter()
    history, running = [], []
    pooled = config.loss == "pooled"
    val_before = _val_gain(refiner, val_pairs, device, pooled)
    refiner.train()
    for step in range(1, config.steps + 1):
        recon, target, cond = _tensors(make_batch(codec, images, rng, config.batch, config.crop), device)
        loss = _loss(refiner, recon, target, cond, config.loss == "pooled")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(loss)})")
        running.append(loss.item())
        if step % config.val_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            gain = _val_gain(refiner, val_pairs, device, pooled)
            history.append({"step": step, "train_gain_db": -float(np.mean(running)), "val_gain_db": gain,
                            "seconds": round(elapsed, 1)})
            progress(f"step {step}/{config.steps}  loss {np.mean(running):+.3f}  val PSNR gain {gain:+.3f} dB  "
                     f"{elapsed:.0f} s, ~{elapsed / step * (config.steps - step):.0f} s left")
            running = []
    refiner.eval()
    return {"val_gain_db_before": val_before, "val_gain_db": history[-1]["val_gain_db"], "history": history,
            "train_seconds": round(time.perf_counter() - start, 1)}


def train_base(corpus: str | Path, config: TrainConfig, device: str = "cpu",
               progress: Progress = print) -> tuple[LowRankModel, dict]:
    """SVD core from the training regions of every modality, then the refiner on top of it."""
    rng = _seed(config.seed)
    images = load_images(corpus)
    core = fit_core(images, config.patch, config.seed)
    progress(f"core: {core.patch}x{core.patch} patches, {core.max_rank} components fitted on {len(images)} images")
    refiner = Refiner(1, config.width, config.depth, grid=config.patch).to(device)
    codec = Codec(LowRankModel(core, Refiner(1, config.width, config.depth, grid=config.patch), "training", {}))
    figures = _loop(refiner, list(refiner.parameters()), codec, images, config, rng, device, progress)
    figures["parameters"] = count_parameters(core, refiner)
    return LowRankModel(core, refiner.cpu(), "trained", {}), figures


def train_adapter(corpus: str | Path, model: LowRankModel, modality: str, config: TrainConfig,
                  device: str = "cpu", progress: Progress = print) -> tuple[Adapter, dict]:
    """LoRA on every refiner convolution, trained on one modality with the base frozen."""
    if modality not in MODALITIES:
        raise InvalidParameterError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    rng = _seed(config.seed)
    images = load_images(corpus, modality)
    if not images:
        raise InvalidParameterError(f"the corpus at {corpus} has no {modality} images")
    base = model.refiner
    refiner = Refiner(base.channels, base.width, base.depth, base.cond_channels, base.grid)
    refiner.load_state_dict(base.state_dict())
    for p in refiner.parameters():
        p.requires_grad_(False)
    refiner.to(device)
    layers = {}
    for path, module in refiner.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            a_shape, b_shape = lora.expected_shapes(module, config.lora_rank)
            a = torch.empty(a_shape, device=device)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's initialisation: B = 0, so W unchanged
            b = torch.zeros(b_shape, device=device, requires_grad=True)
            layers[path] = lora.LoraWeights(a.requires_grad_(), b, config.lora_alpha)
    lora.attach(refiner, modality, layers)
    lora.set_active(refiner, {modality: 1.0})
    adapters = [layer.adapters[modality] for layer in lora.lora_layers(refiner)]
    params = [t for adapter in adapters for t in (adapter.a, adapter.b)]
    codec = Codec(model)
    figures = _loop(refiner, params, codec, images, config, rng, device, progress)
    trained = {path: lora.LoraWeights(w.a.detach().cpu(), w.b.detach().cpu(), w.alpha)
               for path, w in ((p, refiner.get_submodule(p).adapters[modality]) for p in layers)}
    n_adapter = sum(w.a.numel() + w.b.numel() for w in trained.values())
    n_base = count_parameters(model.core, base)
    figures["parameters"] = n_adapter
    figures["share_of_base"] = n_adapter / n_base
    return Adapter(trained, model.sha256), figures


def count_parameters(core: lowrank.LowRankCore, refiner: Refiner) -> int:
    return int(core.mean.size + core.basis.size + sum(p.numel() for p in refiner.parameters()))


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
