"""On a CUDA device: the same bits as on the CPU. Deselected by default (pytest -m gpu)."""

import numpy as np
import pytest
import torch

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec.model import LowRankModel
from lowrank_batch.codec.refine import Refiner

from .conftest import smooth_image

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device (they are deselected by default; run them with -m gpu)")
    return "cuda"


def test_lossless_and_near_lossless_are_bit_exact_with_the_cpu(cuda):
    cpu = Codec.load()
    gpu = Codec.load(device=cuda)
    rng = np.random.default_rng(3)
    for shape, bits in [((300, 257), 16), ((512, 512), 12), ((64, 80, 3), 8)]:
        a = smooth_image(rng, shape, bits)
        for mode, kw in [("lossless", {}), ("near-lossless", {"max_error": 2})]:
            blob_cpu = cpu.encode(a, bits, mode=mode, **kw).to_bytes()
            blob_gpu = gpu.encode(a, bits, mode=mode, **kw).to_bytes()
            assert blob_cpu == blob_gpu
            assert np.array_equal(cpu.decode(EncodedImage.from_bytes(blob_gpu)),
                                  gpu.decode(EncodedImage.from_bytes(blob_cpu)))


def test_lossy_latents_are_bit_exact_and_outputs_within_one_level(cuda):
    """Lossy latents and their integer reconstruction are the same bits on both devices; the
    recorded PSNR and the refined output come from float layers, so they may differ slightly
    (seen on an H200: the lossy blobs differed, the latents did not)."""
    cpu = Codec.load()
    gpu = Codec.load(device=cuda)
    a = smooth_image(np.random.default_rng(5), (256, 300), 12)
    enc_cpu, enc_gpu = cpu.encode(a, 12, mode="lossy"), gpu.encode(a, 12, mode="lossy")
    assert enc_cpu.latent_stream == enc_gpu.latent_stream
    assert enc_cpu.decoded_sha256 == enc_gpu.decoded_sha256
    assert abs(enc_cpu.psnr - enc_gpu.psnr) < 0.05
    diff = np.abs(cpu.decode(enc_gpu).astype(int) - gpu.decode(enc_cpu).astype(int))
    assert diff.max() <= 1


def test_refined_previews_agree_within_one_level(cuda):
    base = Codec.load()
    torch.manual_seed(0)
    refiner = Refiner(base.model.core.channels)
    for p in refiner.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model = LowRankModel(base.model.core, refiner, base.model.sha256, base.model.metadata)
    cpu, gpu = Codec(model), Codec(LowRankModel(base.model.core, Refiner(1), base.model.sha256, {}), device=cuda)
    gpu.model.refiner.load_state_dict(refiner.state_dict())
    a = smooth_image(np.random.default_rng(4), (256, 256), 12)
    enc = cpu.encode(a, 12)
    diff = np.abs(cpu.decode(enc, preview=True).astype(int) - gpu.decode(enc, preview=True).astype(int))
    assert diff.max() <= 1


def test_format2_lossless_is_bit_exact_with_the_cpu(cuda):
    """Format 2's trained integer tables and linear predictor run on the CPU either way; the
    latent reconstruction they are guided by comes from the device: same bytes, same pixels."""
    cpu = Codec.load()
    gpu = Codec.load(device=cuda)
    rng = np.random.default_rng(6)
    for shape, bits in [((300, 257), 16), ((128, 96, 3), 8)]:
        a = smooth_image(rng, shape, bits)
        for mode, kw in [("lossless", {}), ("near-lossless", {"max_error": 1})]:
            blob_cpu = cpu.encode(a, bits, mode=mode, format_version=2, **kw).to_bytes()
            blob_gpu = gpu.encode(a, bits, mode=mode, format_version=2, **kw).to_bytes()
            assert blob_cpu == blob_gpu
            assert np.array_equal(gpu.decode(EncodedImage.from_bytes(blob_cpu)),
                                  cpu.decode(EncodedImage.from_bytes(blob_gpu)))


def test_encode_actor_on_its_gpu_writes_the_cpu_bytes(cuda, tmp_path):
    """The job's actor path: an EncodeWorker holding one GPU runs the codec on cuda:0, and its
    lossless and near-lossless rows are the CPU worker's bytes."""
    import ray

    from lowrank_batch.archive import Archive
    from lowrank_batch.images import write_image
    from lowrank_batch.pipeline.units import list_sources, make_units
    from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker

    rng = np.random.default_rng(11)
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        write_image(src / f"g{k}.png", smooth_image(rng, (256, 200 + k), 12))
    units = make_units(list_sources(str(src)), 8)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for mode, kw in [("lossless", {}), ("near-lossless", {"max_error": 2})]:
            settings = EncodeSettings(mode=mode, max_error=kw.get("max_error"))
            gpu = ray.remote(num_cpus=1, num_gpus=1)(EncodeWorker).remote(str(tmp_path / f"gpu-{mode}"), "r", settings)
            assert ray.get(gpu.info.remote())["device"] == "cuda:0"
            ray.get([gpu.encode_unit.remote(u) for u in units])
            cpu = EncodeWorker(str(tmp_path / f"cpu-{mode}"), "r", settings)
            assert cpu.device == "cpu"
            for u in units:
                cpu.encode_unit(u)
            a, b = Archive.open(str(tmp_path / f"gpu-{mode}")), Archive.open(str(tmp_path / f"cpu-{mode}"))
            for image_id in a.ids():
                assert a.row(image_id, ["latent", "residual"]) == b.row(image_id, ["latent", "residual"])
    finally:
        ray.shutdown()
