"""Model files: writing and strictly loading the codec's model (core + refiner) as safetensors.

Model files are safetensors only. Tensor names:
    core.mean            (D,)    patch mean, in units of the full pixel range
    core.basis           (D, K)  right singular vectors, by decreasing singular value
    refine.body.N.weight / .bias  the refiner's convolutions
The `__metadata__` carries the architecture name and the configuration as JSON, so a file
describes itself. Loading is strict: every missing or unexpected key and every shape mismatch
is reported at once, and NaN/Inf are refused.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..codec.loaded import LowRankModel
from ..codec.lowrank import LowRankCore
from ..codec.refine import Refiner
from ..errors import WeightsError
from ..hashing import file_sha256
from .safetensors_check import read_header

ARCHITECTURE = "lowrank-ae-v1"

__all__ = ["ARCHITECTURE", "LowRankModel", "canonicalise_header", "file_sha256", "load_model", "model_config",
           "save_model"]


def model_config(core: LowRankCore, refiner: Refiner) -> dict:
    return {
        "patch": core.patch,
        "channels": core.channels,
        "max_rank": core.max_rank,
        "refiner_width": refiner.width,
        "refiner_depth": refiner.depth,
        "refiner_cond_channels": refiner.cond_channels,
        "refiner_grid": refiner.grid,
    }


def save_model(path: str | Path, core: LowRankCore, refiner: Refiner, extra_metadata: dict | None = None) -> str:
    """Write a model file; returns its SHA-256."""
    tensors = {
        "core.mean": torch.from_numpy(np.ascontiguousarray(core.mean, dtype=np.float32)),
        "core.basis": torch.from_numpy(np.ascontiguousarray(core.basis, dtype=np.float32)),
    }
    for name, value in refiner.state_dict().items():
        tensors[f"refine.{name}"] = value.detach().to(torch.float32).contiguous().cpu()
    metadata = {"architecture": ARCHITECTURE, "config": json.dumps(model_config(core, refiner), sort_keys=True)}
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise WeightsError(f"metadata key {key!r} is reserved for the model's own description")
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)
    canonicalise_header(Path(path))
    return file_sha256(path)


def canonicalise_header(path: Path) -> None:
    """Rewrite the safetensors JSON header with sorted keys.

    safetensors writes `__metadata__` in hash-map order, so the same model would get a new
    SHA-256 on every save; sorted keys make equal models byte-identical. Data offsets are
    relative to the end of the header, so only the header changes (padded to 8 bytes).
    """
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def load_model(path: str | Path, label: str | None = None) -> LowRankModel:
    """Load a model file strictly; raise WeightsError listing every problem at once.

    The safetensors header is validated before any tensor is read; tensors are memory-mapped.
    """
    path = Path(path)
    name = label or str(path)
    if not path.is_file():
        raise WeightsError(f"model file {name} does not exist")
    read_header(path, name)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise WeightsError(f"model file {name} is not a valid safetensors file: {exc}") from None
    if metadata.get("architecture") != ARCHITECTURE:
        raise WeightsError(
            f"model file {name} has architecture {metadata.get('architecture')!r}, expected {ARCHITECTURE!r}"
        )
    try:
        config = json.loads(metadata["config"])
        patch, channels = int(config["patch"]), int(config["channels"])
        refiner = Refiner(channels, int(config["refiner_width"]), int(config["refiner_depth"]),
                          int(config.get("refiner_cond_channels", 0)),  # files before conditioning had none
                          int(config.get("refiner_grid", 0)))
        max_rank = int(config["max_rank"])
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"model file {name} has malformed config metadata: {exc}") from None
    dim = patch * patch * channels
    expected = {"core.mean": (dim,), "core.basis": (dim, max_rank)}
    expected |= {f"refine.{k}": tuple(v.shape) for k, v in refiner.state_dict().items()}
    problems = []
    for key in sorted(expected.keys() - tensors.keys()):
        problems.append(f"missing key {key}")
    for key in sorted(tensors.keys() - expected.keys()):
        problems.append(f"unexpected key {key}")
    for key in sorted(expected.keys() & tensors.keys()):
        t = tensors[key]
        if tuple(t.shape) != expected[key]:
            problems.append(f"{key}: shape {tuple(t.shape)}, expected {expected[key]}")
        elif t.dtype != torch.float32:
            problems.append(f"{key}: dtype {t.dtype}, expected torch.float32")
        elif not torch.isfinite(t).all():
            problems.append(f"{key}: contains NaN or Inf")
    if problems:
        raise WeightsError(f"model file {name} does not match {ARCHITECTURE}: " + "; ".join(problems))
    refiner.load_state_dict({k.removeprefix("refine."): v for k, v in tensors.items() if k.startswith("refine.")})
    refiner.eval()
    core = LowRankCore(patch, channels, tensors["core.mean"].numpy(), tensors["core.basis"].numpy())
    from .coder_tables import SHIPPED_TABLES  # (that module writes its files with canonicalise_header above)

    return LowRankModel(core, refiner, file_sha256(path), metadata, SHIPPED_TABLES)
