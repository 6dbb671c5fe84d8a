"""The training jobs end to end: corpus -> train -> evaluate -> a weight file with its provenance.

Used by `jobs/train.py` and `lowrank-batch train`. With `address`, the training runs on that
Ray cluster as one task holding a GPU when the cluster has one; the driver writes the file.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..codec.codec import Codec
from ..codec.loaded import LowRankModel
from ..hashing import file_sha256
from ..weights.model_file import load_model, save_model
from ..weights.adapters import save_canonical
from .corpus import MODALITIES, build_corpus, load_manifest
from .evaluate import bd_rate, measure, validation_images
from .trainer import TrainConfig, config_dict, train_adapter, train_base

LOSS_DESCRIPTION = ("L = R_lossless + lambda*D_preview; the trained layers are off the exact path (dR/dtheta = 0), "
                    "so training minimises D: minus the mean PSNR gain (dB) of refined over linear reconstructions "
                    "of quantised latents (lossy 32-56 dB and the lossless preview). R is measured, not trained.")


def ensure_corpus(corpus: str | Path) -> dict:
    if not (Path(corpus) / "manifest.json").is_file():
        build_corpus(corpus)
    return load_manifest(corpus)


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _provenance(manifest: dict, config: TrainConfig, modality: str | None) -> dict:
    images = [e["name"] for e in manifest["images"] if modality is None or e["modality"] == modality]
    sources = [s for s in manifest["sources"] if modality is None or s["modality"] == modality]
    return {"corpus": {"sources": sources, "images": images, "val_fraction": manifest["val_fraction"]},
            "training_config": config_dict(config), "seed": str(config.seed), "code_version": __version__,
            "loss": LOSS_DESCRIPTION}


def _label_digest(label: str) -> str:
    """A stand-in digest for an in-memory model or adapter (encoded images record 32-byte digests)."""
    return hashlib.sha256(label.encode()).hexdigest()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compare(corpus, modality: str, reference: Codec, trained: Codec) -> dict:
    images = validation_images(corpus, modality)
    ref, new = measure(reference, images), measure(trained, images)
    return {"images": ref["images"], "pixels": ref["pixels"],
            "lossless_bpp": {"reference": ref["lossless_bpp"], "trained": new["lossless_bpp"]},
            "lossy": {"reference": ref["lossy"], "trained": new["lossy"]},
            # the latents (the bits) are the same with and without the learned layers; only the
            # adapter's 32-byte digest in each header differs, which weighs on tiny strips
            "bd_rate_percent": _bd_rate_or_none(ref["lossy"], equal_latents(ref["lossy"], new["lossy"])),
            "bd_rate_all_bytes_percent": _bd_rate_or_none(ref["lossy"], new["lossy"])}


def equal_latents(reference: list[dict], trained: list[dict]) -> list[dict]:
    """The trained curve at the reference's rates: PSNR at equal latent bits."""
    return [{**t, "bpp": r["bpp"]} for r, t in zip(reference, trained)]


def _bd_rate_or_none(reference: list[dict], test: list[dict]) -> float | None:
    try:
        return bd_rate(reference, test)
    except (ValueError, np.linalg.LinAlgError):  # too few / non-overlapping points: no figure
        return None


def train_base_file(corpus: str | Path, out: str | Path, config: TrainConfig, device: str | None = None,
                    progress=print) -> dict:
    start = time.perf_counter()
    manifest = ensure_corpus(corpus)
    model, figures = train_base(corpus, config, _device(device), progress)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_model(out, model.core, model.refiner, _provenance(manifest, config, None))  # kept if evaluation fails
    progress("evaluating on the validation regions ...")
    linear = Codec(LowRankModel(model.core, model.refiner.untrained_like(), _label_digest("linear"), {}))
    trained = Codec(LowRankModel(model.core, model.refiner, _label_digest("trained"), {}))
    figures["validation"] = {m: _compare(corpus, m, linear, trained) for m in MODALITIES
                             if validation_images(corpus, m)}
    figures["total_seconds"] = round(time.perf_counter() - start, 1)
    figures["peak_rss_mib"] = round(_peak_rss_mib())
    metadata = _provenance(manifest, config, None) | {"figures": figures,
                                                       "trained_by": "lowrank-batch train base (jobs/train.py)"}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    digest = save_model(out, model.core, model.refiner, metadata)
    return {"file": str(out), "sha256": digest, "bytes": Path(out).stat().st_size, "figures": figures}


def train_adapter_file(corpus: str | Path, base: str | Path, modality: str, out: str | Path, config: TrainConfig,
                       device: str | None = None, progress=print) -> dict:
    start = time.perf_counter()
    manifest = ensure_corpus(corpus)
    model = load_model(base)
    adapter, figures = train_adapter(corpus, model, modality, config, _device(device), progress)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_canonical(Path(out), adapter, _provenance(manifest, config, modality))  # kept if evaluation fails
    progress("evaluating on the validation regions ...")
    with_adapter = Codec(model)
    with_adapter.apply_adapter(adapter.layers, _label_digest(f"adapter-{modality}"))
    figures["validation"] = _compare(corpus, modality, Codec(model), with_adapter)
    figures["total_seconds"] = round(time.perf_counter() - start, 1)
    figures["peak_rss_mib"] = round(_peak_rss_mib())
    metadata = _provenance(manifest, config, modality) | {
        "modality": modality, "figures": figures, "trained_by": "lowrank-batch train adapter (jobs/train.py)"}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_canonical(Path(out), adapter, metadata)
    return {"file": str(out), "sha256": file_sha256(out), "bytes": Path(out).stat().st_size,
            "base_sha256": model.sha256, "figures": figures}


def run(kind: str, corpus: str, out: str, config: TrainConfig, modality: str | None = None,
        base: str | None = None, address: str | None = None, device: str | None = None) -> dict:
    """Train locally, or on a Ray cluster as one task (on a GPU when the cluster has one)."""
    if address is None:
        if kind == "base":
            return train_base_file(corpus, out, config, device)
        return train_adapter_file(corpus, base, modality, out, config, device)
    import ray

    connected_here = not ray.is_initialized()  # a caller already connected keeps its connection
    if connected_here:
        ray.init(address=address, log_to_driver=True)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=1)(_remote_train)
        blob, report = ray.get(task.remote(kind, str(Path(corpus).resolve()), config, modality,
                                           Path(base).read_bytes() if base else None, device))
    finally:
        if connected_here:
            ray.shutdown()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(blob)
    return report | {"file": str(out)}


def _remote_train(kind, corpus, config, modality, base_bytes, device):
    """Runs inside the Ray task: train into a temporary folder, hand the file's bytes back."""
    import os
    import tempfile

    if device is None and not torch.cuda.is_available():
        device = "cpu"  # a GPU slot was asked for but this node's torch sees none (CPU wheel, fake GPUs)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.safetensors"
        if kind == "base":
            report = train_base_file(corpus, out, config, device)
        else:
            base = Path(tmp) / "base.safetensors"
            base.write_bytes(base_bytes)
            report = train_adapter_file(corpus, base, modality, out, config, device)
        return out.read_bytes(), report | {"worker_pid": os.getpid(),
                                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def summary(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if k != "figures"} | {
        "figures": {k: v for k, v in report["figures"].items() if k != "history"}}, indent=1, default=float)


__all__ = ["run", "summary", "TrainConfig", "replace"]
