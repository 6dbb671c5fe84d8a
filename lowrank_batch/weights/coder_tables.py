"""The residual coder's trained context tables (format 2): a small safetensors file each.

Tensors: `lut` (int32, fine contexts -> bucket), `prior` (int32, buckets x tokens, >= 1),
`lin` (int32, LIN_CLASSES x taps: the trained linear predictor's weights, units of 2**-LIN_SHIFT).
Metadata: architecture, `nx` (extra classes per activity bucket), training figures.
An encoded image names its tables by SHA-256; decoding looks them up among the shipped files
and fails naming the digest when they are not there.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..codec import context_model as cm
from ..codec.model import canonicalise_header, file_sha256
from ..codec.residual_coder import ContextTables
from ..codec.tokens import NUM_TOKENS
from ..errors import WeightsError

ARCHITECTURE = "lrbi-context-tables-v1"
SHIPPED = Path(__file__).resolve().parent / "default" / "coder"
# Pinned: `python -m lowrank_batch.training.coder_tables --out DIR` prints new files' digests.
SHIPPED_TABLES_SHA256 = {
    "activity": "07668c2030205a9773ac5f86c51af492cb0b72f988f9fdcef0036430905024f7",
    "medical": "b5f4f7c8c56145b6d1fdaf7ebc36f2bd986cb6ad09970d1140f664499d1de328",
}


def save_tables(path: str | Path, tables: ContextTables, metadata: dict | None = None) -> str:
    """Write tables as safetensors (sorted header: same tables, same bytes); returns the SHA-256."""
    meta = {"architecture": ARCHITECTURE, "nx": str(tables.nx)}
    meta |= {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    save_file({"lut": torch.from_numpy(tables.lut.astype(np.int32)),
               "prior": torch.from_numpy(tables.prior.astype(np.int32)),
               "lin": torch.from_numpy(tables.lin.astype(np.int32))}, str(path), metadata=meta)
    canonicalise_header(Path(path))
    return file_sha256(path)


def load_tables(path: str | Path) -> ContextTables:
    """Load and check tables strictly: every problem at once, in one WeightsError."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).numpy().astype(np.int64) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"context tables {path} are not a valid safetensors file: {exc}") from None
    problems = []
    if meta.get("architecture") != ARCHITECTURE:
        problems.append(f"architecture {meta.get('architecture')!r}, expected {ARCHITECTURE!r}")
    if set(tensors) != {"lin", "lut", "prior"}:
        problems.append(f"tensors {sorted(tensors)}, expected ['lin', 'lut', 'prior']")
    lin = tensors.get("lin")
    if lin is not None and (lin.shape != (cm.LIN_CLASSES, len(cm.LIN_TAPS)) or np.abs(lin).max() >= 1 << 20):
        problems.append(f"lin shape {lin.shape} or weights out of range")
    nx = int(meta.get("nx", "0")) if meta.get("nx", "").isdigit() else 0
    if nx != cm.NUM_EXTRA:
        problems.append(f"nx {meta.get('nx')!r}, expected {cm.NUM_EXTRA}")
    lut, prior = tensors.get("lut"), tensors.get("prior")
    if lut is not None and prior is not None:
        if lut.shape != (cm.NUM_BUCKETS * cm.NUM_EXTRA,):
            problems.append(f"lut shape {lut.shape}")
        if prior.ndim != 2 or prior.shape[1] != NUM_TOKENS or not 1 <= prior.shape[0] <= 255:
            problems.append(f"prior shape {prior.shape}")
        elif (lut.min() < 0 or lut.max() >= prior.shape[0] or prior.min() < 1
              or prior.sum(axis=1).max() > cm.COUNT_LIMIT):
            problems.append("values out of range (lut index, prior count)")
    if problems:
        raise WeightsError(f"context tables {path}: " + "; ".join(problems))
    return ContextTables(np.ascontiguousarray(lut), nx, np.ascontiguousarray(prior), np.ascontiguousarray(lin))


@functools.lru_cache(maxsize=None)
def shipped_tables() -> dict[str, Path]:
    """SHA-256 -> file, for every shipped tables file (in file-name order), checked against the pins."""
    found = {file_sha256(p): p for p in sorted(SHIPPED.glob("*.safetensors"))}
    if set(found) != set(SHIPPED_TABLES_SHA256.values()):
        raise WeightsError(f"shipped context tables in {SHIPPED} do not match their pinned digests")
    return found


def candidate_tables() -> list[str]:
    """Digests the encoder tries per image (format 2): every shipped tables file, by name."""
    return list(shipped_tables())


@functools.lru_cache(maxsize=8)
def tables_by_digest(sha256: str) -> ContextTables:
    path = shipped_tables().get(sha256)
    if path is None:
        raise WeightsError(f"this image needs context tables {sha256}, which this installation does not have: "
                           "install a lowrank_batch release that ships them")
    return load_tables(path)
