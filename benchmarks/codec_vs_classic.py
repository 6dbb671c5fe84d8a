"""The codec against classic codecs (imagecodecs) on the dev corpus.

    python -m benchmarks.codec_vs_classic [--modalities ct,mr,cr,natural] [--heldout] [--out FILE]

Lossless: ratio = raw bytes (ceil(bits_stored/8) per sample) / compressed bytes, per modality,
against JPEG-LS, JPEG 2000 reversible, HTJ2K, JPEG XL lossless and PNG.
Near-lossless: bpp at max error 1, 2, 4 against JPEG-LS NEAR (bound checked on every pixel).
Lossy: bpp at PSNR 40/45/50 dB (peak 2**bits-1) against JPEG 2000, found by bisection on each
codec's quality knob and interpolated between the bracketing points.
Speed: lossless encode/decode megapixels per second on one core, ours and OpenJPEG's.
Writes JSON (default benchmarks/results/codec_vs_classic.json) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import imagecodecs as ic  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lowrank_batch import Codec, EncodedImage  # noqa: E402
from lowrank_batch.codec import metrics  # noqa: E402
from lowrank_batch.report import baselines  # noqa: E402
from lowrank_batch.report.baselines import classic_lossless  # noqa: E402
from lowrank_batch.devcorpus import CorpusImage, dev_images, heldout_images, raw_bytes  # noqa: E402

LOSSLESS = ("ours", "jpegls", "j2k", "htj2k", "jxl", "png")
NEAR_DELTAS = (1, 2, 4)
PSNR_TARGETS = (40.0, 45.0, 50.0)
PREVIEW_SIDE = 512  # thumbnail/viewport size of the preview latency figure
FORMAT = {"version": None}  # --format-version (None: the codec's default)


def as_unsigned(im: CorpusImage) -> np.ndarray:
    return baselines.as_unsigned(im.pixels, im.bits_stored)


def lossless_row(codec: Codec, im: CorpusImage) -> dict:
    a = as_unsigned(im)
    row = {"name": im.name, "modality": im.modality, "raw": raw_bytes(im), "pixels": im.pixels.size}
    t0 = time.perf_counter()
    enc = codec.encode(im.pixels, im.bits_stored, format_version=FORMAT["version"])
    blob = enc.to_bytes()
    t1 = time.perf_counter()
    out = codec.decode(EncodedImage.from_bytes(blob))
    t2 = time.perf_counter()
    latents = EncodedImage.join(*EncodedImage.from_bytes(blob).split()[:1], None)  # what a preview reads
    codec.decode(latents, preview=True)
    t3 = time.perf_counter()
    codec.decode(latents, max_side=PREVIEW_SIDE)
    row["preview_s"], row["thumbnail_s"] = t3 - t2, time.perf_counter() - t3
    row["exact"] = bool(np.array_equal(out, im.pixels))
    row["ours"] = len(blob)
    row["ours_enc_s"], row["ours_dec_s"] = t1 - t0, t2 - t1
    for name in LOSSLESS[1:]:
        t0 = time.perf_counter()
        row[name] = len(classic_lossless(name, a, im.bits_stored))
        if name == "j2k":
            row["j2k_enc_s"] = time.perf_counter() - t0
            b = classic_lossless(name, a, im.bits_stored)
            t0 = time.perf_counter()
            ic.jpeg2k_decode(b, numthreads=1)
            row["j2k_dec_s"] = time.perf_counter() - t0
    return row


def near_row(codec: Codec, im: CorpusImage) -> dict:
    a = as_unsigned(im)
    row = {"name": im.name, "modality": im.modality, "pixels": im.pixels.shape[0] * im.pixels.shape[1]}
    for d in NEAR_DELTAS:
        enc = codec.encode(im.pixels, im.bits_stored, mode="near-lossless", max_error=d,
                           format_version=FORMAT["version"])
        out = codec.decode(EncodedImage.from_bytes(enc.to_bytes()))
        row[f"ours_{d}"] = enc.encoded_bytes
        row[f"ours_{d}_maxerr"] = metrics.max_abs_error(im.pixels, out)
        b = ic.jpegls_encode(a, level=d)
        row[f"jpegls_{d}"] = len(b)
        row[f"jpegls_{d}_maxerr"] = metrics.max_abs_error(a, ic.jpegls_decode(b))
    return row


def _bytes_at_psnr(code, target: float, lo: float, hi: float, steps: int = 14) -> float | None:
    """Bisection on a quality knob q (PSNR increasing in q); code(q) -> (bytes, psnr).

    Returns the bytes at `target` interpolated between the closest points below and above it,
    or None when the knob's range cannot reach the target.
    """
    below = above = None
    for _ in range(steps):
        q = 0.5 * (lo + hi)
        size, p = code(q)
        if p >= target:
            above = (size, p) if above is None or size < above[0] else above
            hi = q
        else:
            below = (size, p) if below is None or size > below[0] else below
            lo = q
        if above and abs(above[1] - target) < 0.02:
            return float(above[0])
    if above is None:
        return None
    if below is None or math.isinf(above[1]):
        return float(above[0])
    (s0, p0), (s1, p1) = below, above
    return s0 + (s1 - s0) * (target - p0) / (p1 - p0)


def lossy_row(codec: Codec, im: CorpusImage) -> dict:
    a = as_unsigned(im)
    bits = im.bits_stored
    row = {"name": im.name, "modality": im.modality, "pixels": im.pixels.shape[0] * im.pixels.shape[1]}

    def ours(q):
        enc = codec.encode(im.pixels, bits, mode="lossy", quality=q)
        return enc.encoded_bytes, enc.psnr

    def j2k(q):
        b = ic.jpeg2k_encode(a, level=q, reversible=False, bitspersample=bits, numthreads=1)
        return len(b), metrics.psnr(a, ic.jpeg2k_decode(b), bits)

    for target in PSNR_TARGETS:
        row[f"ours_{target:g}"] = _bytes_at_psnr(ours, target, 10.0, 90.0)
        row[f"j2k_{target:g}"] = _bytes_at_psnr(j2k, target, 10.0, 120.0)
    return row


def by_modality(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped per modality, plus "all"."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["modality"]].append(r)
    if rows:
        groups["all"] = list(rows)
    return groups


def summarise(rows_lossless, rows_near, rows_lossy) -> dict:
    summary: dict = {"lossless": {}, "near_lossless": {}, "lossy": {}, "speed": {}}
    for mod, rows in by_modality(rows_lossless).items():
        raw = sum(r["raw"] for r in rows)
        summary["lossless"][mod] = {name: raw / sum(r[name] for r in rows) for name in LOSSLESS}
        summary["lossless"][mod]["exact"] = all(r["exact"] for r in rows)
        summary["lossless"][mod]["images"] = len(rows)
    px = sum(r["pixels"] for r in rows_lossless) / 1e6
    summary["speed"] = {
        "ours_encode_MPps": px / sum(r["ours_enc_s"] for r in rows_lossless),
        "ours_decode_MPps": px / sum(r["ours_dec_s"] for r in rows_lossless),
        "j2k_encode_MPps": px / sum(r["j2k_enc_s"] for r in rows_lossless),
        "j2k_decode_MPps": px / sum(r["j2k_dec_s"] for r in rows_lossless),
        "preview_ms_max": 1000 * max(r["preview_s"] for r in rows_lossless),
        "thumbnail_ms_max": 1000 * max(r["thumbnail_s"] for r in rows_lossless),
    }
    for mod, rows in by_modality(rows_near).items():
        pixels = sum(r["pixels"] for r in rows)
        summary["near_lossless"][mod] = {
            f"{c}_{d}": 8 * sum(r[f"{c}_{d}"] for r in rows) / pixels for d in NEAR_DELTAS for c in ("ours", "jpegls")
        }
        summary["near_lossless"][mod]["bound_held"] = all(
            r[f"ours_{d}_maxerr"] <= d for r in rows for d in NEAR_DELTAS
        )
    for mod, rows in by_modality(rows_lossy).items():
        entry = {}
        for t in PSNR_TARGETS:
            usable = [r for r in rows if r[f"ours_{t:g}"] is not None and r[f"j2k_{t:g}"] is not None]
            pixels = sum(r["pixels"] for r in usable) or 1
            entry[f"ours_{t:g}"] = 8 * sum(r[f"ours_{t:g}"] for r in usable) / pixels
            entry[f"j2k_{t:g}"] = 8 * sum(r[f"j2k_{t:g}"] for r in usable) / pixels
            entry[f"images_{t:g}"] = len(usable)
        summary["lossy"][mod] = entry
    return summary


def markdown(summary: dict) -> str:
    lines = ["### Lossless ratio (higher is better)", "",
             "| modality | images | ours | JPEG-LS | JPEG 2000 | HTJ2K | JPEG XL | PNG | exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mod, s in summary["lossless"].items():
        lines.append(f"| {mod} | {s['images']} | " + " | ".join(f"{s[n]:.3f}" for n in LOSSLESS) +
                     f" | {'yes' if s['exact'] else 'NO'} |")
    lines += ["", "### Near-lossless bpp (lower is better)", "",
              "| modality | " + " | ".join(f"ours δ={d} | JPEG-LS δ={d}" for d in NEAR_DELTAS) + " | bound held |",
              "|---|" + "---|---|" * len(NEAR_DELTAS) + "---|"]
    for mod, s in summary["near_lossless"].items():
        cells = " | ".join(f"{s[f'ours_{d}']:.3f} | {s[f'jpegls_{d}']:.3f}" for d in NEAR_DELTAS)
        lines.append(f"| {mod} | {cells} | {'yes' if s['bound_held'] else 'NO'} |")
    if summary["lossy"]:
        lines += ["", "### Lossy bpp at PSNR (lower is better)", "",
                  "| modality | " + " | ".join(f"ours {t:g} dB | J2K {t:g} dB" for t in PSNR_TARGETS) + " |",
                  "|---|" + "---|---|" * len(PSNR_TARGETS)]
    for mod, s in summary["lossy"].items():
        lines.append(f"| {mod} | " + " | ".join(
            f"{s[f'ours_{t:g}']:.3f} | {s[f'j2k_{t:g}']:.3f}" for t in PSNR_TARGETS) + " |")
    sp = summary["speed"]
    lines += ["", "### Lossless speed, one core (MP/s)", "", "| | encode | decode |", "|---|---|---|",
              f"| ours | {sp['ours_encode_MPps']:.2f} | {sp['ours_decode_MPps']:.2f} |",
              f"| OpenJPEG (imagecodecs jpeg2k) | {sp['j2k_encode_MPps']:.2f} | {sp['j2k_decode_MPps']:.2f} |",
              "", f"Slowest preview: full size {sp['preview_ms_max']:.0f} ms, "
              f"thumbnail (max side {PREVIEW_SIDE}) {sp['thumbnail_ms_max']:.0f} ms"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", default="ct,mr,cr,natural")
    parser.add_argument("--heldout", action="store_true", help="the held-out RG1/MR2 images instead")
    parser.add_argument("--skip-lossy", action="store_true")
    parser.add_argument("--format-version", type=int, default=None, help="encode this format version")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/codec_vs_classic.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    FORMAT["version"] = args.format_version
    codec = Codec.load()
    images = heldout_images() if args.heldout else dev_images(tuple(args.modalities.split(",")))
    codec.encode(images[0].pixels[:64, :64], images[0].bits_stored)  # compile numba kernels first
    rows_lossless = [lossless_row(codec, im) for im in images]
    rows_near = [near_row(codec, im) for im in images]
    rows_lossy = [] if args.skip_lossy else [lossy_row(codec, im) for im in images]
    summary = summarise(rows_lossless, rows_near, rows_lossy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "lossless": rows_lossless, "near_lossless": rows_near,
                                    "lossy": rows_lossy}, indent=1))
    print(markdown(summary))
    print(f"\n(JSON: {args.out})")


if __name__ == "__main__":
    main()
