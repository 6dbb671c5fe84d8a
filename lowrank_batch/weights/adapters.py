"""Adapter files: peft's folder layout, kohya's single file, and our canonical form.

Canonical adapter (what the store keeps): a safetensors file with, per target module,
`<module>.lora_A.weight`, `<module>.lora_B.weight` and `<module>.alpha` (a 0-d tensor), and
`__metadata__` {format, base_sha256, use_rslora, source_format}. The binding to the base
model's SHA-256 travels inside the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import WeightsError
from ..codec.lora import LoraWeights
from .model_file import canonicalise_header
from .safetensors_check import read_header

ADAPTER_FORMAT = "lowrank-lora-v1"
PEFT_PREFIX = "base_model.model."
CANONICAL_KEYS = ("format", "base_sha256", "use_rslora", "source_format")


@dataclass
class Adapter:
    layers: dict[str, LoraWeights]
    base_sha256: str | None
    use_rslora: bool = False
    source_format: str = "lowrank"
    provenance: dict | None = None  # extra __metadata__ (training corpus, config, figures), kept verbatim


def _tensors(path: Path, label: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Validated header first, then the tensors (memory-mapped); NaN/Inf refused."""
    header = read_header(path, label)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        raise WeightsError(f"{label}: tensors contain NaN or Inf: {', '.join(bad)}")
    return tensors, header.get("__metadata__", {})


def read_canonical(path: Path, label: str) -> Adapter:
    tensors, meta = _tensors(path, label)
    if meta.get("format") != ADAPTER_FORMAT:
        raise WeightsError(f"{label}: not a {ADAPTER_FORMAT} adapter (metadata format {meta.get('format')!r})")
    rslora = meta.get("use_rslora") == "true"
    modules = sorted({k.rsplit(".", 2)[0] for k in tensors if k.endswith((".lora_A.weight", ".lora_B.weight"))})
    layers = {}
    for m in modules:
        try:
            layers[m] = LoraWeights(tensors[f"{m}.lora_A.weight"], tensors[f"{m}.lora_B.weight"],
                                    float(tensors[f"{m}.alpha"]), rslora)
        except KeyError as exc:
            raise WeightsError(f"{label}: module {m!r} lacks {exc.args[0]}") from None
    extra = {k: v for k, v in meta.items() if k not in CANONICAL_KEYS}
    return Adapter(layers, meta.get("base_sha256"), rslora, meta.get("source_format", "lowrank"), extra or None)


def is_canonical(path: Path, label: str) -> bool:
    return read_header(path, label).get("__metadata__", {}).get("format") == ADAPTER_FORMAT


def read_peft(config_path: Path, weights_path: Path, label: str) -> Adapter:
    """peft's adapter_config.json + adapter_model.safetensors (keys base_model.model.<m>.lora_A.weight)."""
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{label}: adapter_config.json is not valid JSON ({exc})") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise WeightsError(f"{label}: peft_type {config.get('peft_type')!r} is not LORA")
    unsupported = [k for k in ("use_dora", "lora_bias", "fan_in_fan_out") if config.get(k)]
    if unsupported:
        raise WeightsError(f"{label}: peft options {unsupported} are not supported (plain LoRA / rsLoRA only)")
    tensors, _ = _tensors(weights_path, f"{label}/adapter_model.safetensors")
    alpha = float(config.get("lora_alpha", config.get("r", 8)))
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora", False))
    layers = {}
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight").removeprefix(PEFT_PREFIX)
        b_key = key.replace(".lora_A.weight", ".lora_B.weight")
        if b_key not in tensors:
            raise WeightsError(f"{label}: {key} has no matching lora_B")
        a_alpha = next((float(v) for k, v in alpha_pattern.items() if module == k or module.endswith("." + k)), alpha)
        layers[module] = LoraWeights(tensors[key], tensors[b_key], a_alpha, rslora)
    if not layers:
        raise WeightsError(f"{label}: no lora_A/lora_B tensors found")
    return Adapter(layers, None, rslora, "peft")


def read_kohya(path: Path, label: str, module_names: list[str]) -> Adapter:
    """kohya's `<prefix>_<module_path_with_underscores>.lora_down/.lora_up/.alpha`."""
    tensors, _ = _tensors(path, label)
    stems = sorted({k.removesuffix(".lora_down.weight") for k in tensors if k.endswith(".lora_down.weight")})
    if not stems:
        raise WeightsError(f"{label}: no kohya lora_down/lora_up tensors found")
    by_flat = {m.replace(".", "_"): m for m in module_names if m}
    layers, problems = {}, []
    for stem in stems:
        hits = [m for flat, m in by_flat.items() if stem == flat or stem.endswith("_" + flat)]
        if len(hits) != 1:
            problems.append(f"{stem!r} matches {len(hits)} modules of the model")
            continue
        down, up = tensors[f"{stem}.lora_down.weight"], tensors.get(f"{stem}.lora_up.weight")
        if up is None:
            problems.append(f"{stem!r} has no lora_up")
            continue
        alpha = float(tensors[f"{stem}.alpha"]) if f"{stem}.alpha" in tensors else float(down.shape[0])
        layers[hits[0]] = LoraWeights(down, up, alpha)
    if problems:
        raise WeightsError(f"{label}: cannot map the kohya file onto the model: " + "; ".join(problems))
    return Adapter(layers, None, False, "kohya")


def save_canonical(path: Path, adapter: Adapter, extra_metadata: dict | None = None) -> None:
    """Write the canonical file; `extra_metadata` (training provenance) goes into __metadata__ as JSON."""
    tensors = {}
    for m, w in adapter.layers.items():
        tensors[f"{m}.lora_A.weight"] = w.a.detach().to(torch.float32).contiguous().cpu()
        tensors[f"{m}.lora_B.weight"] = w.b.detach().to(torch.float32).contiguous().cpu()
        tensors[f"{m}.alpha"] = torch.tensor(float(w.alpha), dtype=torch.float32)
    metadata = {"format": ADAPTER_FORMAT, "base_sha256": adapter.base_sha256 or "",
                "use_rslora": "true" if adapter.use_rslora else "false", "source_format": adapter.source_format}
    for key, value in {**(adapter.provenance or {}), **(extra_metadata or {})}.items():
        if key not in metadata:
            metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)
    canonicalise_header(path)


def export_peft(adapter: Adapter, folder: str | Path) -> None:
    """Write peft's layout so peft's PeftModel.from_pretrained can load our adapter."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranks = {m: w.a.shape[0] for m, w in adapter.layers.items()}
    alphas = {m: w.alpha for m, w in adapter.layers.items()}
    r = max(ranks.values())
    alpha = max(alphas.values())
    config = {
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": sorted(adapter.layers),
        "use_rslora": adapter.use_rslora, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "rank_pattern": {m: k for m, k in ranks.items() if k != r},
        "alpha_pattern": {m: a for m, a in alphas.items() if a != alpha},
        "init_lora_weights": True, "task_type": None, "base_model_name_or_path": None,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1))
    tensors = {}
    for m, w in adapter.layers.items():
        tensors[f"{PEFT_PREFIX}{m}.lora_A.weight"] = w.a.detach().to(torch.float32).contiguous()
        tensors[f"{PEFT_PREFIX}{m}.lora_B.weight"] = w.b.detach().to(torch.float32).contiguous()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
