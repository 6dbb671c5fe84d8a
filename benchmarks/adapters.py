"""Trained weights on the corpus's validation regions: linear vs trained base, base vs base + adapter.

    python -m benchmarks.adapters [--corpus corpus] [--out benchmarks/results/adapters.json]

Per modality: lossless bits per pixel (the adapter cannot change them: the learned layers are
off the exact path; only its 32-byte digest is added to each header) and lossy PSNR at each
quality, where both codecs code the same latents, with the BD-rate that PSNR shift amounts to
(at equal latent bits, and counting every byte).
The corpus is built from installed packages when missing (jobs/build_corpus.py).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

from lowrank_batch.codec.codec import Codec  # noqa: E402
from lowrank_batch.weights.model_file import LowRankModel, load_model  # noqa: E402
from lowrank_batch.training.corpus import MODALITIES  # noqa: E402
from lowrank_batch.training.run import _compare, _label_digest, ensure_corpus  # noqa: E402
from lowrank_batch.weights.adapters import read_canonical  # noqa: E402
from lowrank_batch.weights.defaults import default_adapter_file, default_model_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/adapters.json"))
    args = parser.parse_args()
    ensure_corpus(args.corpus)
    model = load_model(default_model_file())
    linear = Codec(LowRankModel(model.core, model.refiner.untrained_like(), _label_digest("linear"), {}))
    results = {}
    for modality in MODALITIES:
        adapted = Codec(model)
        adapted.apply_adapter(read_canonical(default_adapter_file(modality), modality).layers,
                              _label_digest(f"adapter-{modality}"))
        results[modality] = {"trained_vs_linear": _compare(args.corpus, modality, linear, Codec(model)),
                             "adapter_vs_base": _compare(args.corpus, modality, Codec(model), adapted)}
        print_modality(modality, results[modality])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


def print_modality(modality: str, r: dict) -> None:
    base = r["adapter_vs_base"]
    lossless = base["lossless_bpp"]
    print(f"\n### {modality} ({base['images']} validation strips, {base['pixels']} px)")
    print(f"lossless bpp: base {lossless['reference']:.4f}, base + adapter {lossless['trained']:.4f}")
    print("| quality | bpp | PSNR linear | PSNR base | PSNR base+adapter |")
    print("|---|---|---|---|---|")
    for lin, b, a in zip(r["trained_vs_linear"]["lossy"]["reference"], base["lossy"]["reference"],
                         base["lossy"]["trained"]):
        print(f"| {b['quality']:.0f} | {b['bpp']:.4f} | {lin['psnr']:.2f} | {b['psnr']:.2f} | {a['psnr']:.2f} |")
    fmt = lambda v: "n/a" if v is None else f"{v:+.1f}%"  # noqa: E731
    print(f"BD-rate at equal latent bits: trained base vs linear {fmt(r['trained_vs_linear']['bd_rate_percent'])}, "
          f"adapter vs base {fmt(base['bd_rate_percent'])} (counting the adapter digest's 32 header bytes: "
          f"{fmt(base['bd_rate_all_bytes_percent'])})")


if __name__ == "__main__":
    main()
