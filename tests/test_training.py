"""Training: the corpus builder, a few real optimiser steps on a tiny corpus, what the weight
files carry, reproducibility, and the BD-rate arithmetic. (Full training is a job, never CI.)"""

import json

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from lowrank_batch import Codec
from lowrank_batch.weights.model_file import load_model
from lowrank_batch.errors import InvalidParameterError, WeightsError
from lowrank_batch.training.corpus import build_corpus, load_images
from lowrank_batch.training.evaluate import bd_rate
from lowrank_batch.training.run import train_adapter_file, train_base_file
from lowrank_batch.training.trainer import TrainConfig
from lowrank_batch.weights.adapters import read_canonical
from lowrank_batch.weights.install import install_adapter, install_model
from lowrank_batch.weights.store import WeightStore

TINY = TrainConfig(steps=4, batch=4, crop=32, val_every=2, val_pairs=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    build_corpus(folder, ("mr",))
    return folder


def test_corpus_has_provenance_a_validation_split_and_no_reserved_files(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    names = {s["file"] for s in manifest["sources"]}
    assert "MR-SIEMENS-DICOM-WithOverlays.dcm" in names
    assert not any(n.startswith(("RG1_", "MR2_")) for n in names)
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    import pydicom

    images = dict((e.name, (e, a)) for e, a in load_images(corpus))
    entry, pixels = images["MR-SIEMENS-DICOM-WithOverlays.dcm"]
    source = pydicom.dcmread(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm")).pixel_array
    assert np.array_equal(pixels, source)  # stored exactly, no rescaling
    assert entry.val_from_col % 16 == 0 and entry.val_from_col < pixels.shape[1]
    assert entry.val_from_col >= 0.7 * pixels.shape[1]


def test_unknown_modality_is_refused(tmp_path):
    with pytest.raises(InvalidParameterError, match="unknown modalities"):
        build_corpus(tmp_path, ("ultrasound",))


def test_base_and_adapter_training_write_loadable_files_with_provenance(corpus, tmp_path):
    base_file = tmp_path / "base.safetensors"
    report = train_base_file(corpus, base_file, TINY, progress=lambda s: None)
    model = load_model(base_file)
    assert model.sha256 == report["sha256"]
    meta = model.metadata
    assert json.loads(meta["config"])["refiner_grid"] == 16
    assert {s["file"] for s in json.loads(meta["corpus"])["sources"]} >= {"MR-SIEMENS-DICOM-WithOverlays.dcm"}
    figures = json.loads(meta["figures"])
    assert set(figures["validation"]) == {"mr"}
    assert figures["validation"]["mr"]["lossless_bpp"]["reference"] > 0
    assert not model.refiner.is_identity()  # the optimiser moved the refiner

    adapter_file = tmp_path / "mr.safetensors"
    areport = train_adapter_file(corpus, base_file, "mr", adapter_file, TINY, progress=lambda s: None)
    assert areport["base_sha256"] == model.sha256
    assert areport["figures"]["share_of_base"] < 0.05  # the budget: <= 5% of the base
    adapter = read_canonical(adapter_file, "mr")
    assert adapter.base_sha256 == model.sha256 and json.loads(adapter.provenance["figures"])["parameters"] > 0

    # installable into the store, bound to its base; usable by the codec; refused on another base
    store = WeightStore(tmp_path / "store")
    install_model(store, str(base_file), "trained")
    entry = install_adapter(store, str(adapter_file), "trained", "mr")
    assert entry.sha256 == areport["sha256"]  # provenance survives the canonical re-save byte for byte
    codec = Codec.load("trained", adapter="mr", store=store)
    image = load_images(corpus, "mr")[0][1]
    enc = codec.encode(image, 12, "lossy", quality=40)
    assert enc.adapter_sha256 == entry.sha256
    assert Codec.for_image(enc, store=store).decode(enc).shape == image.shape
    other = tmp_path / "other.safetensors"
    report2 = train_base_file(corpus, other, TrainConfig(steps=2, batch=4, crop=32, val_every=1, val_pairs=4, seed=7),
                              progress=lambda s: None)
    install_model(store, str(other), "other")
    assert report2["sha256"] != report["sha256"]
    with pytest.raises(WeightsError, match="was made for base model"):
        install_adapter(store, str(adapter_file), "other")


def test_training_is_reproducible_with_the_same_seed(corpus, tmp_path):
    from lowrank_batch.training.trainer import train_base

    config = TrainConfig(steps=3, batch=4, crop=32, val_every=3, val_pairs=4)
    a, _ = train_base(corpus, config, progress=lambda s: None)
    b, _ = train_base(corpus, config, progress=lambda s: None)
    for (name, x), (_, y) in zip(a.refiner.state_dict().items(), b.refiner.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert np.array_equal(a.core.basis, b.core.basis)


def test_bd_rate_of_a_curve_with_half_the_bits_is_minus_fifty_percent():
    ref = [{"bpp": r, "psnr": 30 + 6 * np.log2(r)} for r in (0.25, 0.5, 1, 2, 4)]
    half = [{"bpp": p["bpp"] / 2, "psnr": p["psnr"]} for p in ref]
    assert bd_rate(ref, ref) == pytest.approx(0, abs=1e-9)
    assert bd_rate(ref, half) == pytest.approx(-50, abs=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        bd_rate(ref, [{"bpp": p["bpp"], "psnr": p["psnr"] + 100} for p in ref])


def test_training_runs_as_one_gpu_task_on_a_ray_cluster(cluster, corpus, tmp_path, monkeypatch):
    """--address: the job becomes one Ray task holding a GPU (the test cluster has two fake
    ones; torch sees none, so it trains on CPU there) and the driver writes the file."""
    import os

    from lowrank_batch.training.run import run

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "ray_base.safetensors"
    report = run("base", str(corpus), str(out), TINY, address="auto")
    assert load_model(out).sha256 == report["sha256"]
    assert report["worker_pid"] != os.getpid()
    assert report["cuda_visible_devices"] in ("0", "1")  # Ray pinned one GPU for the task
