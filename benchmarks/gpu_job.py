"""The encode actor path on one GPU: throughput, batch size, GPU memory, CPU = GPU bits.

    python -m benchmarks.gpu_job [--images N] [--size S] [--batch-size B] [--modes ...]

Runs the job's EncodeWorker inside a Ray task that holds one GPU (so the device comes from the
GPU Ray assigned, as in a job), over real 16-bit tiles cut from the dev corpus (CT, MR, CR), and
the same units on the CPU in this process; compares every row's bytes. Prints one JSON document
(also written to benchmarks/results/gpu_job.json). Without a GPU it runs the same path on CPU
(device "cpu", smaller defaults) so it can be checked anywhere. About 1-2 min on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lowrank_batch.archive.reader import Archive  # noqa: E402
from lowrank_batch.pipeline.decoding import ArchiveDecoder  # noqa: E402
from lowrank_batch.devcorpus import dev_images  # noqa: E402
from lowrank_batch.pipeline.archive_weights import resolve_weights, ship_weights  # noqa: E402
from lowrank_batch.pipeline.units import list_sources, make_units  # noqa: E402
from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = {"lossless": {}, "near-lossless": {"max_error": 2}, "lossy": {"quality": 45.0}}


def make_tiles(folder: Path, count: int, size: int) -> int:
    """`count` size x size 16-bit PNG tiles from the dev corpus's CT/MR/CR images; returns pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    tiles = []
    for im in dev_images(("ct", "mr", "cr")):
        a = np.asarray(im.pixels)
        if a.ndim != 2 or min(a.shape) < size:
            continue
        for y in range(0, a.shape[0] - size + 1, size):
            for x in range(0, a.shape[1] - size + 1, size):
                tiles.append(a[y : y + size, x : x + size])
    if not tiles:
        raise SystemExit(f"no dev-corpus image is {size}x{size} or larger")
    for k in range(count):
        tile = tiles[k % len(tiles)].astype(np.int64)
        tile = np.clip(tile - tile.min(), 0, 65535).astype(np.uint16)
        Image.fromarray(tile).save(folder / f"t{k:03d}.png")
    return count * size * size


def _settings(mode: str) -> EncodeSettings:
    kw = MODES[mode]
    return EncodeSettings(mode=mode, max_error=kw.get("max_error"), quality=kw.get("quality"))


def run_worker(dst: str, mode: str, units, weights) -> dict:
    """The encode actor's work, timed: construction (weights, device), a warm-up unit (kernels
    compile), then the timed units. Runs in a Ray task holding a GPU, or in this process."""
    start = time.perf_counter()
    worker = EncodeWorker(dst, "bench", _settings(mode), weights=weights)
    ready = time.perf_counter()
    worker.encode_unit(units[0])  # warm-up: numba compilation, CUDA context and kernels
    if worker.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed = time.perf_counter()
    pixels = 0
    for unit in units[1:]:
        pixels += worker.encode_unit(unit).pixels
    if worker.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - timed
    out = {"device": worker.device, "load_seconds": ready - start, "warmup_seconds": timed - ready,
           "seconds": seconds, "megapixels": pixels / 1e6, "mp_per_s": pixels / 1e6 / seconds if seconds else None}
    if worker.device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        out |= {"gpu_name": torch.cuda.get_device_name(), "gpu_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "gpu_used_mib": (total - free) / 2**20, "gpu_total_mib": total / 2**20}
    return out


def same_rows(a: str, b: str) -> dict:
    """Rows of two archives compared: whole encoded bytes (latent and residual columns), and the
    latents alone (latent stream and the digest of their integer reconstruction; a lossy header
    also records a PSNR measured through float layers, which may differ in its last bits)."""
    x, y = Archive.open(a), Archive.open(b)
    ids = x.ids()
    differ = [i for i in ids if x.row(i, ["latent", "residual"]) != y.row(i, ["latent", "residual"])]

    def latents(archive, i):
        enc = ArchiveDecoder(archive).encoded(i, preview=True)
        return enc.latent_stream, enc.decoded_sha256

    latent_differ = [i for i in ids if latents(x, i) != latents(y, i)]
    return {"images": len(ids), "identical": len(ids) - len(differ), "differ": differ[:5],
            "identical_latents": len(ids) - len(latent_differ), "same_ids": ids == y.ids()}


def main(argv=None) -> dict:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=33 if gpu else 5, help="tiles; the first unit is a warm-up")
    p.add_argument("--size", type=int, default=512 if gpu else 256)
    p.add_argument("--batch-size", type=int, default=4 if gpu else 1, help="files per unit (the job's --batch-size)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = p.parse_args(argv)
    import ray

    work = Path(tempfile.mkdtemp(prefix="gpu-job-"))
    os.environ.setdefault("LOWRANK_HOME", str(work / "home"))
    pixels = make_tiles(work / "src", args.images, args.size)
    units = make_units(list_sources(str(work / "src")), args.batch_size)
    weights, files = resolve_weights(None, None)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), num_gpus=1 if gpu else 0, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    remote = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(run_worker)
    result = {"gpu": gpu, "torch": torch.__version__, "images": args.images, "tile": args.size,
              "batch_size": args.batch_size, "units_timed": len(units) - 1, "source_megapixels": pixels / 1e6,
              "modes": {}}
    try:
        for mode in args.modes:
            dst_gpu, dst_cpu = str(work / f"gpu-{mode}"), str(work / f"cpu-{mode}")
            for dst in (dst_gpu, dst_cpu):
                ship_weights(*_fs(dst), files)
            accel = ray.get(remote.remote(dst_gpu, mode, units, weights))  # on the GPU Ray assigned
            cpu = run_worker(dst_cpu, mode, units, weights)  # the same code on this process's CPU
            result["modes"][mode] = {"actor": accel, "cpu": cpu,
                                     "speedup": accel["mp_per_s"] / cpu["mp_per_s"] if cpu["mp_per_s"] else None,
                                     "bits": same_rows(dst_gpu, dst_cpu)}
    finally:
        ray.shutdown()
    result["mp_per_s_per_gpu"] = {m: r["actor"]["mp_per_s"] for m, r in result["modes"].items()} if gpu else None
    result["cpu_equals_gpu"] = {m: r["bits"]["identical"] == r["bits"]["images"] for m, r in result["modes"].items()}
    result["cpu_equals_gpu_latents"] = {m: r["bits"]["identical_latents"] == r["bits"]["images"]
                                        for m, r in result["modes"].items()}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_job.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


def _fs(uri: str):
    import fsspec

    return fsspec.core.url_to_fs(uri)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
