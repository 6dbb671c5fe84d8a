"""The weight store: verified installs, hostile files refused with the store unchanged."""

import json
import multiprocessing
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lowrank_batch import Codec, WeightsError
from lowrank_batch.cli import main
from lowrank_batch.weights.model_file import file_sha256, load_model, save_model
from lowrank_batch.weights.defaults import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256, default_model_file
from lowrank_batch.weights.install import ensure_default, install_model
from lowrank_batch.weights.store import WeightStore

from .s3server import seaweedfs


@pytest.fixture
def store(tmp_path):
    return WeightStore(tmp_path / "home")


def snapshot(store):
    """Everything visible in the store (temporaries must be gone too)."""
    files = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file() and p.name != ".lock")
    return files, [(p, open(store.root / p, "rb").read()) for p in files if p.startswith("refs")]


def test_shipped_default_matches_its_pin_and_installs_on_first_use(store):
    assert file_sha256(default_model_file()) == DEFAULT_MODEL_SHA256
    assert store.entries("models") == []
    codec = Codec.load(store=store)
    (entry,) = store.entries("models")
    assert (entry.name, entry.sha256, entry.version) == (DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256, 1)
    assert codec.model.sha256 == DEFAULT_MODEL_SHA256
    assert ensure_default(store) == entry  # second use: nothing new


def test_install_pinned_digest_and_versions(store, tmp_path):
    src = str(default_model_file())
    with pytest.raises(WeightsError, match="expected 00000"):
        install_model(store, src, "base", "0" * 64)
    assert store.entries("models") == []
    one = install_model(store, src, "base", DEFAULT_MODEL_SHA256)
    model = load_model(src)
    model.refiner.body[0].bias.data += 0.5
    other = tmp_path / "other.safetensors"
    save_model(other, model.core, model.refiner)
    two = install_model(store, f"file://{other}", "base")
    assert (one.version, two.version) == (1, 2) and one.sha256 != two.sha256
    assert store.resolve("models", "base").sha256 == two.sha256
    assert store.resolve("models", "base@1").sha256 == one.sha256
    assert store.resolve("models", one.sha256[:16]).version == 1
    copy = install_model(store, src, "alias")
    assert copy.sha256 == one.sha256 and len(list((store.root / "blobs" / "sha256").iterdir())) == 2
    with pytest.raises(WeightsError, match="no model 'nope'.*installed: alias@1, base@1, base@2"):
        store.resolve("models", "nope")


def _good_tensors():
    model = load_model(default_model_file())
    tensors = {"core.mean": torch.from_numpy(model.core.mean.copy()),
               "core.basis": torch.from_numpy(model.core.basis.copy())}
    tensors |= {f"refine.{k}": v.clone() for k, v in model.refiner.state_dict().items()}
    meta = {k: model.metadata[k] for k in ("architecture", "config")}
    return tensors, meta


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['LOWRANK_MARKER']}",))


def _hostile_files(tmp_path):
    tensors, meta = _good_tensors()
    good = tmp_path / "good.safetensors"
    save_file(tensors, str(good), metadata=meta)
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    files = {}
    files["truncated.safetensors"] = raw[: len(raw) // 2]
    files["length_past_end.safetensors"] = struct.pack("<Q", len(raw) * 4) + raw[8:]
    files["malformed_json.safetensors"] = struct.pack("<Q", n) + b"{" + raw[9 : 8 + n].replace(b'"', b"'") + raw[8 + n :]

    def with_header(h):
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + raw[8 + n :]

    h = json.loads(json.dumps(header))
    h["core.mean"]["data_offsets"] = [0, 10**9]
    files["offsets_past_end.safetensors"] = with_header(h)
    h = json.loads(json.dumps(header))
    first, second = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])[:2]
    h[second]["data_offsets"] = [h[first]["data_offsets"][0], h[first]["data_offsets"][0] + (
        h[second]["data_offsets"][1] - h[second]["data_offsets"][0])]
    files["overlap.safetensors"] = with_header(h)
    h = json.loads(json.dumps(header))
    h["core.mean"]["dtype"] = "Q7"
    files["bad_dtype.safetensors"] = with_header(h)
    nan = dict(tensors)
    nan["core.basis"] = nan["core.basis"].clone()
    nan["core.basis"][0, 0] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    files["nan.safetensors"] = (tmp_path / "nan.safetensors").read_bytes()
    wrong = dict(tensors)
    wrong["core.basis"] = wrong["core.basis"][:, :7].contiguous()
    save_file(wrong, str(tmp_path / "wrong.safetensors"), metadata=meta)
    files["wrong_shape.safetensors"] = (tmp_path / "wrong.safetensors").read_bytes()
    files["evil.pt"] = pickle.dumps(_RunsCode())
    files["evil_renamed.safetensors"] = pickle.dumps(_RunsCode())
    torch.save(tensors, tmp_path / "zip.pth")
    files["zip_checkpoint.bin"] = (tmp_path / "zip.pth").read_bytes()
    return files


def test_hostile_files_are_refused_and_leave_the_store_unchanged(store, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LOWRANK_MARKER", str(marker))
    install_model(store, str(default_model_file()), "base")
    before = snapshot(store)
    for name, data in _hostile_files(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsError) as err:
            install_model(store, str(path), "x")
        assert name in str(err.value) or str(path) in str(err.value), err.value
        assert snapshot(store) == before, name
    assert not marker.exists(), "a pickle was unpickled"


def _install_same(args):
    root, src = args
    return install_model(WeightStore(root), src, "base").sha256


def test_two_processes_installing_at_once_leave_one_valid_blob(tmp_path):
    root = tmp_path / "home"
    WeightStore(root)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        digests = pool.map(_install_same, [(root, str(default_model_file()))] * 2)
    store = WeightStore(root)
    assert digests == [DEFAULT_MODEL_SHA256] * 2
    assert [p.name for p in (root / "blobs" / "sha256").iterdir()] == [DEFAULT_MODEL_SHA256]
    assert [e.version for e in store.entries("models")] == [1]
    assert all(problem is None for _, problem in store.verify("models"))
    assert list((root / "tmp").iterdir()) == []


def test_verify_finds_a_damaged_blob(store):
    entry = install_model(store, str(default_model_file()), "base")
    blob = store.blob_path(entry.sha256)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    ((_, problem),) = store.verify("models", "base")
    assert problem and "blob hashes to" in problem


def test_cli_weights_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_HOME", str(tmp_path / "clihome"))
    assert main(["weights", "install", str(default_model_file()), "--name", "base"]) == 0
    out = capsys.readouterr().out
    assert f"installed model base@1 sha256 {DEFAULT_MODEL_SHA256}" in out and "pin it with" in out
    assert main(["weights", "list"]) == 0
    assert "base" in capsys.readouterr().out
    assert main(["weights", "verify"]) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().out
    assert main(["weights", "install", str(default_model_file()), "--sha256", "ab" * 32]) == 2
    assert main(["weights", "remove", "base"]) == 0
    assert main(["weights", "list"]) == 0
    assert "(none installed)" in capsys.readouterr().out


def test_install_from_s3(tmp_path, store):
    with seaweedfs(tmp_path / "s3"):
        import fsspec

        with fsspec.open("s3://weights/models/base.safetensors", "wb") as f:
            f.write(default_model_file().read_bytes())
        entry = install_model(store, "s3://weights/models/base.safetensors", sha256=DEFAULT_MODEL_SHA256)
        assert entry.name == "base" and entry.source.startswith("s3://")
        with pytest.raises(WeightsError, match="cannot read s3://weights/missing"):
            install_model(store, "s3://weights/missing.safetensors")
    codec = Codec.load("base", store=store)
    a = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    assert np.array_equal(codec.decode(codec.encode(a, 12)), a)
