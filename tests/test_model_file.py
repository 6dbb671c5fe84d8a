"""Model files: safetensors with self-describing metadata, loaded strictly."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lowrank_batch.weights.defaults import default_model_file as default_model_path
from lowrank_batch.weights.model_file import ARCHITECTURE, file_sha256, load_model, save_model
from lowrank_batch.errors import WeightsError


def test_default_model_describes_itself():
    model = load_model(default_model_path())
    assert model.metadata["architecture"] == ARCHITECTURE
    config = json.loads(model.metadata["config"])
    assert config["patch"] == model.core.patch and config["max_rank"] == model.core.max_rank
    sources = json.loads(model.metadata["corpus"])["sources"]
    assert sources and all(len(item["sha256"]) == 64 for item in sources)
    assert not any(item["file"].startswith(("RG1_", "MR2_")) for item in sources), "held-out files in training"
    assert not model.refiner.is_identity(), "the shipped refiner is trained"
    figures = json.loads(model.metadata["figures"])
    assert figures["val_gain_db"] > 0.5 and set(figures["validation"]) == {"ct", "mr", "xray", "natural"}
    assert json.loads(model.metadata["training_config"])["seed"] == int(model.metadata["seed"])


def test_shipped_adapters_are_bound_to_the_shipped_model_and_small():
    from lowrank_batch.weights.adapters import read_canonical
    from lowrank_batch.weights.defaults import DEFAULT_ADAPTER_SHA256, DEFAULT_MODEL_SHA256, default_adapter_file

    assert set(DEFAULT_ADAPTER_SHA256) == {"ct", "mr", "xray", "natural"}
    model = load_model(default_model_path())
    base_params = model.core.mean.size + model.core.basis.size + sum(p.numel() for p in model.refiner.parameters())
    for modality, digest in DEFAULT_ADAPTER_SHA256.items():
        path = default_adapter_file(modality)
        assert file_sha256(path) == digest, f"{path} does not match its pin"
        adapter = read_canonical(path, modality)
        assert adapter.base_sha256 == DEFAULT_MODEL_SHA256
        n = sum(w.a.numel() + w.b.numel() for w in adapter.layers.values())
        assert n <= 0.05 * base_params
        assert adapter.provenance["modality"] == modality


def test_save_load_round_trip(tmp_path):
    model = load_model(default_model_path())
    digest = save_model(tmp_path / "m.safetensors", model.core, model.refiner, {"note": "copy"})
    again = load_model(tmp_path / "m.safetensors")
    assert again.sha256 == digest
    assert np.array_equal(again.core.basis, model.core.basis)


def _tensors():
    model = load_model(default_model_path())
    tensors = {"core.mean": torch.from_numpy(model.core.mean.copy()),
               "core.basis": torch.from_numpy(model.core.basis.copy())}
    tensors |= {f"refine.{k}": v.clone() for k, v in model.refiner.state_dict().items()}
    return tensors, {k: model.metadata[k] for k in ("architecture", "config")}


def test_every_problem_is_reported_at_once(tmp_path):
    tensors, meta = _tensors()
    del tensors["core.mean"]
    tensors["extra.weight"] = torch.zeros(3)
    tensors["core.basis"] = tensors["core.basis"][:, :5].contiguous()
    tensors["refine.body.0.bias"] = torch.full_like(tensors["refine.body.0.bias"], float("nan"))
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(WeightsError) as err:
        load_model(tmp_path / "bad.safetensors")
    message = str(err.value)
    for part in ("missing key core.mean", "unexpected key extra.weight", "core.basis: shape", "NaN or Inf"):
        assert part in message


def test_wrong_architecture_and_garbage(tmp_path):
    tensors, meta = _tensors()
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={**meta, "architecture": "resnet"})
    with pytest.raises(WeightsError, match="architecture 'resnet'"):
        load_model(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="safetensors header length 16 points past the end"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
