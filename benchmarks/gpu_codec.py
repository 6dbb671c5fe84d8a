"""What the codec does on a GPU, and whether it gives the CPU's bits (prints JSON).

    python -m benchmarks.gpu_codec [--seconds 150] [--out FILE]

On a CUDA device (falls back to the CPU, saying so, where there is none):
  - lossy encode and decode throughput (MP/s) of the parts that run in torch (the latent
    reconstruction's exact float64 product and the learned refiner), at batch sizes 1/4/16,
    with peak GPU memory;
  - refined preview latency of a large image on the device vs the CPU's linear preview;
  - lossless and near-lossless (formats 1, 2 and 3) encoded on CPU and on the device: bytes equal,
    and each decodes on the other to the same pixels (the residual coder itself is integer
    numba code on the CPU: there is no float maths on the exact path for the GPU to change).
Runs in well under 3 minutes on one GPU; the dev corpus images only (no held-out files).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.devcorpus import dev_images


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _codec_on(device: str) -> Codec:
    return Codec.load(device=device)  # a codec on another device copies the shared refiner


def _tiles(images, side: int, count: int) -> list[tuple[np.ndarray, int]]:
    """`count` side x side crops (12-16-bit medical images, cycled) for batched throughput."""
    out = []
    big = [im for im in images if min(im.pixels.shape[:2]) >= side and im.pixels.ndim == 2]
    k = 0
    while len(out) < count:
        im = big[k % len(big)]
        h, w = im.pixels.shape
        r, c = (k * 97) % (h - side + 1), (k * 61) % (w - side + 1)
        out.append((np.ascontiguousarray(im.pixels[r : r + side, c : c + side]), im.bits_stored))
        k += 1
    return out


def lossy_throughput(codec: Codec, tiles, device: str) -> list[dict]:
    rows = []
    encoded = [codec.encode(a, bits, mode="lossy", quality=45) for a, bits in tiles]  # warm-up + data
    for batch in (1, 4, 16):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        px = sum(a.size for a, _ in tiles) / 1e6
        _sync(device)
        t0 = time.perf_counter()
        for a, bits in tiles:
            codec.encode(a, bits, mode="lossy", quality=45)
        _sync(device)
        t1 = time.perf_counter()
        codec.decode_many(encoded, batch_size=batch)
        _sync(device)
        t2 = time.perf_counter()
        rows.append({"batch_size": batch, "images": len(tiles), "tile": list(tiles[0][0].shape),
                     "encode_MPps": px / (t1 - t0), "decode_MPps": px / (t2 - t1),
                     "peak_gpu_MiB": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None})
    return rows


def preview_latency(codec: Codec, cpu: Codec, image) -> dict:
    enc = cpu.encode(image.pixels, image.bits_stored)
    out = {"image": image.name, "megapixels": image.pixels.size / 1e6}
    for name, c in (("device_refined", codec), ("cpu", cpu), ("cpu_thumbnail_512", None)):
        fn = (lambda: cpu.decode(enc, max_side=512)) if c is None else (lambda c=c: c.decode(enc, preview=True))
        fn()
        _sync(codec.device)
        t0 = time.perf_counter()
        fn()
        _sync(codec.device)
        out[f"{name}_ms"] = 1000 * (time.perf_counter() - t0)
    return out


def bit_equality(codec: Codec, cpu: Codec, images) -> dict:
    checked, equal = 0, 0
    failures = []
    for im in images:
        for version in (1, 2, 3, 4):
            for mode, kw in (("lossless", {}), ("near-lossless", {"max_error": 2})):
                a = cpu.encode(im.pixels, im.bits_stored, mode=mode, format_version=version, **kw).to_bytes()
                b = codec.encode(im.pixels, im.bits_stored, mode=mode, format_version=version, **kw).to_bytes()
                x = cpu.decode(EncodedImage.from_bytes(b))
                y = codec.decode(EncodedImage.from_bytes(a))
                ok = a == b and np.array_equal(x, y) and (mode != "lossless" or np.array_equal(x, im.pixels))
                checked += 1
                equal += ok
                if not ok:
                    failures.append(f"{im.name} v{version} {mode}")
    return {"cases": checked, "bit_equal": equal, "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tiles", type=int, default=32)
    args = parser.parse_args()
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images = dev_images(("ct", "mr", "cr"))
    cpu = Codec.load()
    codec = _codec_on(device)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (no CUDA device: fallback)",
              "torch": torch.__version__}
    result["lossy_throughput"] = lossy_throughput(codec, _tiles(images, 256, args.tiles), device)
    largest = max(images, key=lambda im: im.pixels.size)
    result["preview_latency"] = preview_latency(codec, cpu, largest)
    small = [im for im in images if im.pixels.size <= 300_000][:4]
    result["cpu_vs_device_lossless"] = bit_equality(codec, cpu, small)
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
