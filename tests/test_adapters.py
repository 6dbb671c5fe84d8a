"""LoRA adapters: peft's and kohya's formats, binding to the base, merge/unmerge, codec use."""

import copy
import logging

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from torch import nn

from lowrank_batch import Codec, EncodedImage, WeightsError
from lowrank_batch.cli import main
from lowrank_batch.weights.model_file import load_model, save_model
from lowrank_batch.codec import lora
from lowrank_batch.weights.adapters import export_peft, read_canonical, read_peft
from lowrank_batch.weights.defaults import default_model_file
from lowrank_batch.weights.install import install_adapter, install_model
from lowrank_batch.weights.store import WeightStore

from .conftest import smooth_image

logging.getLogger("peft").setLevel(logging.ERROR)
TARGETS = ["body.0", "body.2", "body.4", "body.6"]


def cond(x):
    """The refiner's condition (latent step, rank share) for a batch: a mid-range quality."""
    return torch.tensor([[0.6, 1.0]]).expand(x.shape[0], -1)


@pytest.fixture
def store(tmp_path):
    s = WeightStore(tmp_path / "home")
    install_model(s, str(default_model_file()), "base")
    return s


@pytest.fixture
def base_refiner():
    return load_model(default_model_file()).refiner


def peft_adapter(module, folder, targets, seed=0, **kw):
    torch.manual_seed(seed)
    pm = get_peft_model(copy.deepcopy(module), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                         init_lora_weights=False, **kw))
    pm.save_pretrained(folder)
    return pm


def test_peft_conv2d_adapter_installs_and_matches_peft(store, base_refiner, tmp_path):
    pm = peft_adapter(base_refiner, tmp_path / "peft", TARGETS)
    entry = install_adapter(store, str(tmp_path / "peft"), "base", "ct")
    assert entry.base_sha256 == store.resolve("models", "base").sha256 and entry.architecture == "lora/peft"
    codec = Codec.load("base", adapter="ct", store=store)
    x = torch.rand(2, 1, 33, 40)
    with torch.no_grad():
        ours, theirs = codec.model.refiner(x, cond(x)), pm(x, cond(x))
    assert not torch.allclose(ours, x)  # the adapter changes the output
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_linear_adapter_matches_peft(tmp_path, rslora):
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    pm = peft_adapter(module, tmp_path / "lin", ["0", "2"], use_rslora=rslora)
    adapter = read_peft(tmp_path / "lin" / "adapter_config.json", tmp_path / "lin" / "adapter_model.safetensors", "lin")
    ours = copy.deepcopy(module)
    lora.attach(ours, "a", adapter.layers)
    lora.set_active(ours, {"a": 1.0})
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.allclose(ours(x), pm(x), atol=1e-6)


def test_our_adapter_loads_back_in_peft(store, base_refiner, tmp_path):
    peft_adapter(base_refiner, tmp_path / "peft", TARGETS, seed=3)
    entry = install_adapter(store, str(tmp_path / "peft"), "base", "mr")
    adapter = read_canonical(store.blob_path(entry.sha256), "mr")
    export_peft(adapter, tmp_path / "exported")
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base_refiner), str(tmp_path / "exported"))
    ours = Codec.load("base", adapter="mr", store=store).model.refiner
    x = torch.rand(1, 1, 25, 31)
    with torch.no_grad():
        assert torch.allclose(reloaded(x, cond(x)), ours(x, cond(x)), atol=1e-5)


def test_kohya_file_equals_applying_down_up_alpha_by_hand(store, base_refiner, tmp_path):
    torch.manual_seed(4)
    tensors, by_hand = {}, copy.deepcopy(base_refiner)
    for path in TARGETS:
        conv = by_hand.get_submodule(path)
        r, alpha = 2, 3.0
        down = torch.randn(r, conv.in_channels, 3, 3) * 0.1
        up = torch.randn(conv.out_channels, r, 1, 1) * 0.1
        stem = "lora_refine_" + path.replace(".", "_")
        tensors |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(alpha)}
        with torch.no_grad():
            conv.weight += (alpha / r) * (up.flatten(1) @ down.flatten(1)).view_as(conv.weight)
    save_file(tensors, str(tmp_path / "kohya.safetensors"))
    entry = install_adapter(store, str(tmp_path / "kohya.safetensors"), "base", "xray")
    assert entry.architecture == "lora/kohya"
    ours = Codec.load("base", adapter="xray", store=store).model.refiner
    x = torch.rand(1, 1, 30, 30)
    with torch.no_grad():
        assert torch.allclose(ours(x, cond(x)), by_hand(x, cond(x)), atol=1e-5)


def test_adapter_for_another_base_is_refused(store, base_refiner, tmp_path):
    peft_adapter(base_refiner, tmp_path / "peft", TARGETS)
    entry = install_adapter(store, str(tmp_path / "peft"), "base", "ct")
    other = load_model(default_model_file())
    other.refiner.body[0].bias.data += 1.0
    save_model(tmp_path / "other.safetensors", other.core, other.refiner)
    other_entry = install_model(store, str(tmp_path / "other.safetensors"), "other")
    with pytest.raises(WeightsError) as err:
        Codec.load("other", adapter="ct", store=store)
    assert entry.base_sha256 in str(err.value) and other_entry.sha256 in str(err.value)
    before = store.entries("adapters")
    with pytest.raises(WeightsError, match="made for base model"):
        install_adapter(store, str(store.blob_path(entry.sha256)), "other", "ct-copy")
    assert store.entries("adapters") == before


def test_bad_adapters_are_refused_with_the_store_unchanged(store, base_refiner, tmp_path):
    peft_adapter(base_refiner, tmp_path / "good", TARGETS)
    cases = {}
    nan = {"lora_refine_body_0.lora_down.weight": torch.full((2, 1, 3, 3), float("nan")),
           "lora_refine_body_0.lora_up.weight": torch.zeros(32, 2, 1, 1)}
    save_file(nan, str(tmp_path / "nan.safetensors"))
    cases["nan.safetensors"] = "NaN or Inf"
    wrong = {"lora_refine_body_2.lora_down.weight": torch.zeros(2, 5, 3, 3),
             "lora_refine_body_2.lora_up.weight": torch.zeros(32, 2, 1, 1)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    cases["wrong.safetensors"] = "do not fit"
    unknown = {"lora_refine_head_9.lora_down.weight": torch.zeros(2, 1, 3, 3),
               "lora_refine_head_9.lora_up.weight": torch.zeros(32, 2, 1, 1)}
    save_file(unknown, str(tmp_path / "unknown.safetensors"))
    cases["unknown.safetensors"] = "matches 0 modules"
    (tmp_path / "evil.ckpt").write_bytes(b"\x80\x04K\x01.")
    cases["evil.ckpt"] = "pickle"
    before = (store.entries("adapters"), sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir()))
    for name, message in cases.items():
        with pytest.raises(WeightsError, match=message):
            install_adapter(store, str(tmp_path / name), "base", "bad")
    with pytest.raises(WeightsError, match="expected 1111"):
        install_adapter(store, str(tmp_path / "good"), "base", "bad", sha256="1" * 64)
    after = (store.entries("adapters"), sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir()))
    assert after == before and list((store.root / "tmp").iterdir()) == []


def _weights(layer, r, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    a_shape, b_shape = lora.expected_shapes(layer, r)
    return lora.LoraWeights(torch.randn(a_shape, generator=g) * scale, torch.randn(b_shape, generator=g) * scale, 2.0)


@pytest.mark.parametrize("layer, x", [
    (nn.Linear(7, 5), torch.randn(3, 7)),
    (nn.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 9, 11)),
    (nn.Conv2d(3, 4, 5, stride=2, padding=2), torch.randn(2, 3, 16, 12)),
    (nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1), torch.randn(2, 3, 8, 7)),
])
def test_merge_equals_unmerged_and_unmerge_is_exact(layer, x):
    root = nn.Sequential(layer)
    original = layer.weight.detach().clone()
    lora.attach(root, "a", {"0": _weights(layer, 2, 0)})
    lora.attach(root, "b", {"0": _weights(layer, 3, 1)})
    lora.set_active(root, {"a": 0.7, "b": 0.3})
    with torch.no_grad():
        unmerged = root(x)
        lora.merge(root)
        merged = root(x)
        lora.unmerge(root)
    assert torch.allclose(unmerged, merged, atol=1e-5)
    assert torch.equal(root[0].base.weight, original)  # bit for bit
    lora.set_active(root, {"a": 1.0})
    with torch.no_grad():
        only_a = root(x)
        lora.set_active(root, {})
        assert torch.equal(root(x), layer(x))
    assert not torch.allclose(only_a, unmerged)
    assert root[0].base is layer and torch.equal(layer.weight, original)  # switching never touched the base


def test_merge_refuses_nan():
    layer = nn.Linear(4, 4)
    root = nn.Sequential(layer)
    w = _weights(layer, 2, 0)
    w.b[0, 0] = float("nan")
    lora.attach(root, "bad", {"0": w})
    lora.set_active(root, {"bad": 1.0})
    before = layer.weight.detach().clone()
    with pytest.raises(WeightsError, match="NaN or Inf"):
        lora.merge(root)
    assert torch.equal(layer.weight, before)


def test_codec_records_the_adapter_and_decode_needs_it(store, base_refiner, tmp_path):
    peft_adapter(base_refiner, tmp_path / "peft", TARGETS)
    entry = install_adapter(store, str(tmp_path / "peft"), "base", "ct")
    with_adapter = Codec.load("base", adapter="ct", store=store)
    plain = Codec.load("base", store=store)
    image = smooth_image(np.random.default_rng(0), (48, 40), 12)
    enc = EncodedImage.from_bytes(with_adapter.encode(image, 12).to_bytes())
    assert enc.adapter_sha256 == entry.sha256
    assert np.array_equal(plain.decode(enc), image)  # lossless never uses the learned layers
    with pytest.raises(WeightsError, match="encoded with adapter"):
        plain.decode(enc, preview=True)
    found = Codec.for_image(enc, store=store)
    assert np.array_equal(found.decode(enc, preview=True), with_adapter.decode(enc, preview=True))
    assert not np.array_equal(found.decode(enc, preview=True), plain.decode(
        plain.encode(image, 12), preview=True))
    assert plain.model.refiner is not with_adapter.model.refiner  # the shared base stays clean


def test_cli_adapters(store, base_refiner, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_HOME", str(store.root))
    peft_adapter(base_refiner, tmp_path / "peft", TARGETS)
    assert main(["adapters", "install", str(tmp_path / "peft"), "--base", "base", "--name", "ct"]) == 0
    out = capsys.readouterr().out
    assert "bound to model base" in out
    pin = out.split("--sha256 ")[1].split()[0]
    assert main(["adapters", "install", str(tmp_path / "peft"), "--base", "base", "--name", "ct2", "--sha256", pin]) == 0
    capsys.readouterr()
    assert main(["adapters", "list"]) == 0
    assert "ct " in capsys.readouterr().out
    assert main(["adapters", "install", str(tmp_path / "peft"), "--base", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_peft_folder_installs_from_s3(store, base_refiner, tmp_path):
    from .s3server import seaweedfs

    pm = peft_adapter(base_refiner, tmp_path / "peft", TARGETS, seed=7)
    with seaweedfs(tmp_path / "s3"):
        import fsspec

        for name in ("adapter_config.json", "adapter_model.safetensors"):
            with fsspec.open(f"s3://weights/adapters/ct/{name}", "wb") as f:
                f.write((tmp_path / "peft" / name).read_bytes())
        entry = install_adapter(store, "s3://weights/adapters/ct", "base")
    assert entry.name == "ct" and entry.source == "s3://weights/adapters/ct"
    x = torch.rand(1, 1, 21, 19)
    with torch.no_grad():
        refiner = Codec.load("base", adapter="ct", store=store).model.refiner
        assert torch.allclose(refiner(x, cond(x)), pm(x, cond(x)), atol=1e-5)
