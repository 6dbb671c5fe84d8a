"""Weights travel with the archive: shipped by digest, verified on read, loaded without any
local store (decode, verify on a machine whose $LOWRANK_HOME is empty)."""

import hashlib
import os
import subprocess
import sys

import fsspec
import numpy as np
import pytest

from lowrank_batch.archive.reader import Archive
from lowrank_batch.archive.weights import WEIGHTS_DIR, blob_key, carried, put_blob, read_blob
from lowrank_batch.codec.model import load_model, save_model
from lowrank_batch.errors import WeightsError
from lowrank_batch.images import write_image
from lowrank_batch.pipeline.archive_weights import ArchiveWeights, resolve_weights, ship_weights
from lowrank_batch.pipeline.units import list_sources, make_units
from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker
from lowrank_batch.weights.adapters import read_canonical, save_canonical
from lowrank_batch.weights.defaults import DEFAULT_MODEL_SHA256, default_model_file
from lowrank_batch.weights.install import ensure_default_adapter, install_adapter, install_model
from lowrank_batch.weights.store import WeightStore

from .conftest import smooth_image


def test_blobs_are_checked_against_their_names_on_write_and_read(tmp_path):
    fs, root = fsspec.filesystem("file"), str(tmp_path / "a")
    data = b"weights" * 100
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(WeightsError, match="hash to"):
        put_blob(fs, root, "0" * 64, data)
    assert put_blob(fs, root, digest, data) and not put_blob(fs, root, digest, data)  # second: intact, kept
    assert read_blob(fs, root, digest) == data and carried(fs, root) == [digest]
    with open(blob_key(root, digest), "r+b") as f:  # one flipped byte
        f.write(b"X")
    with pytest.raises(WeightsError, match="damaged"):
        read_blob(fs, root, digest)
    assert read_blob(fs, root, digest, missing_ok=True) is None
    assert put_blob(fs, root, digest, data) and read_blob(fs, root, digest) == data  # repaired
    with pytest.raises(WeightsError, match="carries no weights"):
        read_blob(fs, root, "1" * 64)
    with pytest.raises(WeightsError, match="not a SHA-256"):
        read_blob(fs, root, "../../etc/passwd")


def install_custom_weights(store: WeightStore, scratch) -> WeightStore:
    """A model ("custom") and an adapter for it ("ct-custom") installed in `store` only."""
    model = load_model(default_model_file())
    model.refiner.body[0].bias.data += 0.01  # another model: another digest
    save_model(scratch / "custom.safetensors", model.core, model.refiner)
    install_model(store, str(scratch / "custom.safetensors"), "custom")
    shipped = WeightStore(scratch / "scratch-home")
    adapter_src = shipped.blob_path(ensure_default_adapter(shipped, "ct").sha256)
    with pytest.raises(WeightsError, match="made for base model"):  # the shipped ct is bound to the shipped base
        install_adapter(store, str(adapter_src), "custom", "ct-custom")
    adapter = read_canonical(adapter_src, "ct")
    adapter.base_sha256 = None
    save_canonical(scratch / "ct-custom.safetensors", adapter)
    install_adapter(store, str(scratch / "ct-custom.safetensors"), "custom", "ct-custom")
    return store


@pytest.fixture
def custom_weights(tmp_path):
    """A model and an adapter installed in one store only (the driver's node)."""
    return install_custom_weights(WeightStore(tmp_path / "driver-home"), tmp_path)


def test_archive_weights_load_by_digest_with_an_empty_store(custom_weights, tmp_path):
    weights, files = resolve_weights("custom", "ct-custom", store=custom_weights)
    assert weights.model_sha256 != DEFAULT_MODEL_SHA256 and weights.adapter_sha256
    fs, root = fsspec.filesystem("file"), str(tmp_path / "archive")
    shipped = ship_weights(fs, root, files)
    assert shipped["written"] == 2 and shipped["bytes"] == sum(p.stat().st_size for p in files.values())
    assert carried(fs, root) == sorted(files)
    empty = WeightStore(tmp_path / "empty-home")
    codec = ArchiveWeights(fs, root, empty).codec(weights.model_sha256, weights.adapter_sha256)
    assert (codec.model.sha256, codec.adapter_sha256) == (weights.model_sha256, weights.adapter_sha256)
    assert empty.entries("models") == [] and all(empty.blob_path(d).exists() for d in files)  # cached, unnamed
    # no copy in the archive and none in the store: a clear error naming the digest
    with pytest.raises(WeightsError, match=weights.model_sha256):
        ArchiveWeights(fs, str(tmp_path / "other"), WeightStore(tmp_path / "empty2")).path(weights.model_sha256)


def _encode_in_process(src, dst, settings, weights, files):
    """The job's steps without Ray: ship the weights, then one EncodeWorker encodes every unit."""
    fs, root = fsspec.core.url_to_fs(str(dst))
    ship_weights(fs, root, files)
    worker = EncodeWorker(str(dst), "run-test", settings, weights=weights)
    for unit in make_units(list_sources(str(src)), 4):
        assert worker.encode_unit(unit).failed == 0
    return worker


def _decode_elsewhere(archive, ids, out, home):
    """verify and decode in a fresh process whose $LOWRANK_HOME is empty (another machine)."""
    script = ("import sys; from lowrank_batch.cli import main; "
              f"rc = main(['verify', {str(archive)!r}]); "
              f"rc2 = main(['decode', {str(archive)!r}, *sum([['--id', i] for i in {ids!r}], []), "
              f"'--out', {str(out)!r}, '--format', 'npy']); sys.exit(rc or rc2)")
    env = dict(os.environ, LOWRANK_HOME=str(home), PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)


def test_custom_weights_archive_decodes_on_a_machine_with_an_empty_store(custom_weights, tmp_path):
    rng = np.random.default_rng(7)
    src = tmp_path / "src"
    src.mkdir()
    images = {f"i{k}.png": smooth_image(rng, (48, 40 + k), 12) for k in range(3)}
    for name, a in images.items():
        write_image(src / name, a)
    settings = EncodeSettings(model="custom", adapter="ct-custom")
    weights, files = resolve_weights("custom", "ct-custom", store=custom_weights)
    worker = _encode_in_process(src, tmp_path / "dst", settings, weights, files)
    assert worker.store.fetched_bytes == sum(p.stat().st_size for p in files.values())  # from the archive
    rows = list(Archive.open(str(tmp_path / "dst")).rows(["model_sha256", "adapter_sha256"]))
    assert {(r["model_sha256"], r["adapter_sha256"]) for r in rows} == {(weights.model_sha256, weights.adapter_sha256)}
    home = tmp_path / "fresh-home"
    result = _decode_elsewhere(tmp_path / "dst", sorted(images), tmp_path / "out", home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 ok, 0 failed" in result.stdout
    for name, a in images.items():
        assert np.array_equal(np.load(tmp_path / "out" / (name + ".npy")), a)
    assert not (home / "refs" / "models.json").exists()  # nothing was installed by name


def test_old_archive_with_the_shipped_model_decodes_on_a_fresh_machine(tmp_path):
    """Archives written before weights travelled carry none: the shipped model (by its pinned
    digest) still decodes them with an empty store."""
    src = tmp_path / "src"
    src.mkdir()
    a = smooth_image(np.random.default_rng(8), (40, 36), 10)
    write_image(src / "x.png", a)
    weights, files = resolve_weights(None, None)
    _encode_in_process(src, tmp_path / "dst", EncodeSettings(), weights, files)
    fs = fsspec.filesystem("file")
    fs.rm(str(tmp_path / "dst" / WEIGHTS_DIR), recursive=True)
    result = _decode_elsewhere(tmp_path / "dst", ["x.png"], tmp_path / "x.npy", tmp_path / "fresh-home")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert np.array_equal(np.load(tmp_path / "x.npy"), a)
