"""Lossless size of the codec's options on the dev corpus (bytes only; no timing).

    python -m benchmarks.lossless_options [--heldout]

Per modality, the lossless ratio (raw = ceil(bits/8) B/px) of: format 1 with the preview at
rank 4, step 1/8 (before Dec 2026), rank 3 / step 1/4 (the default), rank 2 / step 1/4, and
format 2 (trained context tables and linear predictor) at the default preview, format 3 with
its preview budget (1% of the file), format 5 (the default since Dec 2026: format 4 with trained
predictor weights), and format 4 with its preview
budget, with the default preview always (budget 100%), without intensity bands, with bands
wherever they save any bits, and without the preview's bytes (what the file would be with no
latent stream); with JPEG XL (effort 7) for reference and the mean linear-preview PSNR. Every
file is decoded and checked.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec.codec import CodecConfig
from lowrank_batch.devcorpus import dev_images, heldout_images
from lowrank_batch.report.baselines import as_unsigned, classic_lossless

OPTIONS = {
    "f1_rank4_step8": (CodecConfig(preview_rank=4, preview_step=1 / 8), 1),
    "f1_rank3_step4": (CodecConfig(preview_rank=3, preview_step=1 / 4), 1),
    "f1_rank2_step4": (CodecConfig(preview_rank=2, preview_step=1 / 4), 1),
    "f2_rank3_step4": (CodecConfig(preview_rank=3, preview_step=1 / 4), 2),
    "f3_budget1pct": (CodecConfig(), 3),
    "f5_trained_weights": (CodecConfig(), 5),
    "f4_budget1pct": (CodecConfig(), 4),
    "f4_budget100pct": (CodecConfig(preview_budget=1.0), 4),
    "f4_no_bands": (CodecConfig(band_min_pixels=1 << 40), 4),
    "f4_bands_any_gain": (CodecConfig(band_min_gain=0.0), 4),
}
WITHOUT_PREVIEW = "f4_without_preview_bytes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", action="store_true", help="the held-out RG1/MR2 files (evaluation only)")
    args = parser.parse_args()
    images = heldout_images() if args.heldout else dev_images(("ct", "mr", "cr"))
    model = Codec.load().model
    codecs = {name: (Codec(model, cfg), version) for name, (cfg, version) in OPTIONS.items()}
    totals: dict[str, dict] = {}
    for im in images:
        t = totals.setdefault(im.modality, {"raw": 0, "jxl": 0, WITHOUT_PREVIEW: 0, **{n: 0 for n in OPTIONS},
                                            "psnr": {n: [] for n in OPTIONS}})
        t["raw"] += im.pixels.size * ((im.bits_stored + 7) // 8)
        t["jxl"] += len(classic_lossless("jxl", as_unsigned(im.pixels, im.bits_stored), im.bits_stored))
        for name, (codec, version) in codecs.items():
            enc = codec.encode(im.pixels, im.bits_stored, format_version=version)
            blob = enc.to_bytes()
            if not np.array_equal(codec.decode(EncodedImage.from_bytes(blob)), im.pixels):
                raise SystemExit(f"{im.name}: {name} did not decode bit-exactly")
            t[name] += len(blob)
            t["psnr"][name].append(enc.preview_psnr)
            if name == "f4_budget1pct":
                t[WITHOUT_PREVIEW] += len(blob) - len(enc.latent_stream)
    out = {m: {"ratio": {k: t["raw"] / t[k] for k in ["jxl", *OPTIONS, WITHOUT_PREVIEW]},
               "preview_psnr_mean": {n: float(np.mean(v)) for n, v in t["psnr"].items()}} for m, t in totals.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
