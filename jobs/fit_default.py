"""Fit the shipped default model: the SVD linear core from the dev corpus, refiner untrained.

    python jobs/fit_default.py [--out PATH]

Reproducible: fixed seed, fixed corpus (files and SHA-256 recorded in the file's metadata).
The learned layers are trained by the training job; here they start as the identity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lowrank_batch import __version__  # noqa: E402
from lowrank_batch.codec import lowrank, pixels  # noqa: E402
from lowrank_batch.weights.defaults import default_model_file as default_model_path  # noqa: E402
from lowrank_batch.codec.model import save_model  # noqa: E402
from lowrank_batch.codec.refine import Refiner  # noqa: E402
from lowrank_batch.devcorpus import dev_images, source_manifest  # noqa: E402
from lowrank_batch.weights.defaults import DEFAULT_MODEL_SHA256  # noqa: E402

SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_model_path())
    parser.add_argument("--patch", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    images = dev_images()
    samples = []
    for im in images:
        layout = pixels.validate(im.pixels, im.bits_stored)
        planes = pixels.to_planes(im.pixels, layout) / layout.maxval
        samples += [planes[c : c + 1] for c in range(planes.shape[0])]
    core = lowrank.fit_svd(samples, patch=args.patch, channels=1, seed=SEED)
    refiner = Refiner(channels=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    digest = save_model(args.out, core, refiner, {
        "corpus": source_manifest(images),
        "seed": str(SEED),
        "code_version": __version__,
        "fitted_by": "jobs/fit_default.py (SVD core; refiner untrained = identity)",
    })
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")
    if args.out == default_model_path() and digest != DEFAULT_MODEL_SHA256:
        print(f"the shipped model changed: set DEFAULT_MODEL_SHA256 = {digest!r} in lowrank_batch/weights/defaults.py")


if __name__ == "__main__":
    main()
