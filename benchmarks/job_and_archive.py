"""The batch job and the archive: scaling, decode-by-id latency on S3, peak memory.

    python -m benchmarks.job_and_archive [--images 48] [--archive-size 10000]

1. Throughput of the Ray job with 1 and 2 workers against a plain in-process loop running the
   same worker code over the same units (read, decode, encode, write, commit).
2. Decode-by-id latency and bytes read for a 512x512 image in an archive of N images on a
   real SeaweedFS (the archive's other rows are small images written directly).
3. Peak resident memory of one worker encoding a 4096x4096 16-bit image (a subprocess).
Prints a Markdown table and writes benchmarks/results/job_and_archive.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lowrank_batch import Codec  # noqa: E402
from lowrank_batch.devcorpus import dev_images  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def make_source(folder: Path, count: int) -> int:
    """`count` 256x256 16-bit PNG tiles cut from the dev corpus's CT/MR/CR images; returns pixels."""
    tiles = []
    for im in dev_images(("ct", "mr", "cr")):
        a = im.pixels.astype(np.int64) + (1 << (im.bits_stored - 1) if im.pixels.dtype.kind == "i" else 0)
        for y in range(0, a.shape[0] - 255, 256):
            for x in range(0, a.shape[1] - 255, 256):
                tiles.append(a[y : y + 256, x : x + 256].astype(np.uint16))
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        Image.fromarray(tiles[k % len(tiles)]).save(folder / f"tile{k:04d}.png")
    return count * 256 * 256


def throughput(count: int) -> dict:
    import ray

    from lowrank_batch.pipeline.job import JobOptions, run_encode
    from lowrank_batch.pipeline.units import list_sources, make_units
    from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker

    work = Path(tempfile.mkdtemp(prefix="lrb-bench-"))
    pixels = make_source(work / "src", count)
    units = make_units(list_sources(str(work / "src")), 8)
    worker = EncodeWorker(str(work / "loop"), "loop", EncodeSettings())
    worker.encode_unit(units[0])  # compile numba kernels, as the actors do on their first unit
    start = time.perf_counter()
    for unit in units:
        worker.encode_unit(unit)
    loop_s = time.perf_counter() - start
    out = {"images": count, "megapixels": pixels / 1e6, "loop_seconds": loop_s}
    for workers in (1, 2):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        # warm actors: start them, compile, then time the job on a fresh archive
        run_encode(str(work / "src"), str(work / f"warm{workers}"), EncodeSettings(),
                   JobOptions(workers=workers, gpus_per_worker=0, batch_size=8), log=lambda *_: None)
        summary = run_encode(str(work / "src"), str(work / f"ray{workers}"), EncodeSettings(),
                             JobOptions(workers=workers, gpus_per_worker=0, batch_size=8), log=lambda *_: None)
        out[f"ray{workers}_seconds"] = summary["seconds"]
        # steady state: after the first unit came back (actors up, weights loaded, kernels compiled)
        first_unit_px = 8 * 256 * 256
        out[f"ray{workers}_steady_MPps"] = (pixels - first_unit_px) / 1e6 / (summary["seconds"] - summary["startup_seconds"])
        out[f"ray{workers}_startup_seconds"] = summary["startup_seconds"]
        ray.shutdown()
    out["loop_MPps"] = out["megapixels"] / loop_s
    for w in (1, 2):
        out[f"ray{w}_MPps"] = out["megapixels"] / out[f"ray{w}_seconds"]
    out["ray1_overhead_pct"] = 100 * (out["loop_MPps"] / out["ray1_steady_MPps"] - 1)
    out["scaling_2_vs_ideal"] = out["ray2_steady_MPps"] / (2 * out["loop_MPps"])
    return out


def decode_latency(archive_size: int) -> dict:
    import fsspec
    import s3fs

    sys.path.insert(0, str(ROOT))
    from lowrank_batch.archive import Archive, UnitWriter
    from lowrank_batch.pipeline.decoding import ArchiveDecoder
    from tests.s3server import seaweedfs

    codec = Codec.load()
    small = codec.encode((np.arange(64 * 64).reshape(64, 64) % 1024).astype(np.uint16), 10)
    s_latent, s_residual = small.split()
    big_pixels = next(im for im in dev_images(("ct",)) if im.pixels.shape == (512, 512)).pixels
    big = codec.encode(big_pixels, 14)
    b_latent, b_residual = big.split()

    def row(image_id, latent, residual, enc):
        return {"image_id": image_id, "source_uri": f"s3://src/{image_id}", "source_etag": "e", "source_size": 1,
                "shape": list(enc.layout.shape), "dtype": enc.layout.dtype, "bits_stored": enc.layout.bits_stored,
                "mode": "lossless", "max_error": 0, "latent": latent, "residual": residual,
                "pixel_sha256": enc.pixel_sha256, "model_sha256": enc.model_sha256, "adapter_sha256": None,
                "psnr": None, "encoded_bytes": len(latent) + len(residual), "codec_version": "bench",
                "metadata_json": "{}", "run_id": "bench", "unit_id": ""}

    fetched = {"bytes": 0, "requests": 0}
    original = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        data = original(self, start, end)
        fetched["bytes"] += len(data)
        fetched["requests"] += 1
        return data

    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp), buckets=("archive",)):
        fs = fsspec.filesystem("s3")
        per_unit = 100
        for u in range(archive_size // per_unit):
            rows = [row(f"u{u:03d}/img{k:03d}.png", s_latent, s_residual, small) for k in range(per_unit)]
            if u == archive_size // per_unit // 2:
                rows[0] = row(f"u{u:03d}/big.dcm", b_latent, b_residual, big)
                target = rows[0]["image_id"]
            UnitWriter(fs, "archive/a", f"u{u:03d}", "bench").write(rows)
        start = time.perf_counter()
        archive = Archive.open("s3://archive/a")
        open_s = time.perf_counter() - start
        decoder = ArchiveDecoder(archive)
        assert np.array_equal(decoder.get(target), big_pixels)  # warm: codec loaded, kernels compiled
        s3fs.core.S3File._fetch_range = counting
        times = []
        for _ in range(15):
            fetched.update(bytes=0, requests=0)
            start = time.perf_counter()
            decoder.get(target)
            times.append(time.perf_counter() - start)
        s3fs.core.S3File._fetch_range = original
        index_bytes = sum(fs.du(p) for p in fs.glob("archive/a/_commits/*.json"))
    return {"archive_images": len(archive), "open_seconds": open_s, "get_median_ms": 1e3 * statistics.median(times),
            "get_max_ms": 1e3 * max(times), "bytes_read": fetched["bytes"], "range_requests": fetched["requests"],
            "encoded_bytes": big.encoded_bytes, "index_bytes": index_bytes}


PEAK_SCRIPT = """
import resource, numpy as np
from lowrank_batch import Codec
c = Codec.load()
c.encode(np.zeros((64, 64), np.uint16), 16)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
yy, xx = np.mgrid[0:4096, 0:4096]
a = (30000 + 20000 * np.sin(xx / 300) * np.cos(yy / 200) + np.random.default_rng(0).normal(0, 300, xx.shape))
a = np.clip(a, 0, 65535).astype(np.uint16)
del yy, xx
enc = c.encode(a, 16)
after_encode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert np.array_equal(c.decode(enc), a)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, after_encode, peak, enc.encoded_bytes)
"""


def peak_memory() -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, check=True)
    base, after_encode, peak, size = map(int, out.stdout.split())
    return {"baseline_MiB": base / 1024, "peak_encode_MiB": after_encode / 1024, "peak_encode_decode_MiB": peak / 1024,
            "image_MiB": 4096 * 4096 * 2 / 2**20, "encoded_MiB": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--archive-size", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "job_and_archive.json")
    args = parser.parse_args()
    results = {"throughput": throughput(args.images), "decode_by_id": decode_latency(args.archive_size),
               "peak_memory": peak_memory()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    t, d, m = results["throughput"], results["decode_by_id"], results["peak_memory"]
    print("| measure | value |\n|---|---|")
    print(f"| plain loop (same worker code), {t['images']} x 256² 16-bit | {t['loop_MPps']:.2f} MP/s |")
    for w in (1, 2):
        print(f"| Ray job, {w} worker(s): steady state / whole run incl. start-up | "
              f"{t[f'ray{w}_steady_MPps']:.2f} / {t[f'ray{w}_MPps']:.2f} MP/s (start-up {t[f'ray{w}_startup_seconds']:.1f} s) |")
    print(f"| Ray overhead (1 worker, steady) / 2-worker scaling vs ideal 2x | {t['ray1_overhead_pct']:.1f}% / "
          f"{t['scaling_2_vs_ideal']:.2f} |")
    print(f"| archive open, {d['archive_images']} images on SeaweedFS | {1e3 * d['open_seconds']:.0f} ms |")
    print(f"| decode 512² CT by id (median / max of 15) | {d['get_median_ms']:.1f} / {d['get_max_ms']:.1f} ms |")
    print(f"| bytes read for it | {d['bytes_read']} in {d['range_requests']} ranges "
          f"(encoded {d['encoded_bytes']}; index {d['index_bytes']} read once at open) |")
    print(f"| peak RSS, 4096² 16-bit encode / +decode | {m['peak_encode_MiB']:.0f} / {m['peak_encode_decode_MiB']:.0f} "
          f"MiB (baseline {m['baseline_MiB']:.0f} MiB, image {m['image_MiB']:.0f} MiB) |")


if __name__ == "__main__":
    main()
