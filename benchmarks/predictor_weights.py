"""Format 5's predictor weights: how they were trained, and what they save (dev corpus only).

    python -m benchmarks.predictor_weights                    # the trained weights vs formats 1-4's
    python -m benchmarks.predictor_weights --weights 2,1,11,13,14,3,9,12,12,36 13,12,12,12,12,12,12,12,12,12
    python -m benchmarks.predictor_weights --search [--start W] [--rounds 2]

The blend of the residual coder's predictors weighs each one by the inverse of its recent
error, scaled by a per-predictor maximum weight (libjxl's ErrorWeight scale). Formats 1-4 fixed
those at 13, 12, 12, ...; format 5's defaults (blend.TRAINED_PREDICTOR_WEIGHTS) came
from --search: a coordinate search over the weight of each role (the 7 plain predictors, the
guided pair, the linear one), each step trying -6, -3, +3, +6, +12 (then a finer round over
the plain and linear roles: --rounds 1 --steps=-2,2,-4,4 --roles 0,1,2,3,4,5,6,9, with the
refreshes and wide taps of format 5 in place) and keeping the best, with
every candidate judged by the real encoder's bytes on the dev corpus's CT, MR and CR images
(each modality's total counts alike). Only coded bytes count (latent and residual streams), so
a candidate is not charged the few header bytes a plane with non-default weights carries.
Never run this on the held-out RG1/MR2 files: they are for evaluation only. A search takes
~20 s per candidate on one core (about 30 minutes for two rounds).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lowrank_batch import Codec
from lowrank_batch.codec import plane_header as ph
from lowrank_batch.codec.codec import CodecConfig
from lowrank_batch.devcorpus import dev_images

MODALITIES = ("ct", "mr", "cr")
STEPS = (-6, -3, 3, 6, 12)


def coded_bytes(codec: Codec, images, weights: tuple[int, ...]) -> dict[str, int]:
    """Per modality, the latent and residual streams' bytes of every image with these weights."""
    coder = Codec(codec.model, CodecConfig(predictor_weights=weights))
    totals = dict.fromkeys(MODALITIES, 0)
    for im in images:
        enc = coder.encode(im.pixels, im.bits_stored)
        totals[im.modality] += len(enc.latent_stream) + sum(len(s) for s in enc.residual_streams)
    return totals


def _change(sizes: dict[str, int], base: dict[str, int]) -> dict[str, float]:
    return {m: round(100 * (sizes[m] / base[m] - 1), 3) for m in MODALITIES}


def _parse(text: str) -> tuple[int, ...]:
    weights = tuple(int(v) for v in text.split(","))
    CodecConfig(predictor_weights=weights)  # a clear error for a wrong count or range
    return weights


def search(codec: Codec, images, start: tuple[int, ...], rounds: int, steps=STEPS,
           roles=range(ph.NUM_PREDICTORS)) -> tuple[int, ...]:
    base = coded_bytes(codec, images, ph.DEFAULT_PREDICTOR_WEIGHTS)

    def cost(weights) -> float:  # the mean relative size over the modalities
        sizes = coded_bytes(codec, images, weights)
        return float(np.mean([sizes[m] / base[m] for m in MODALITIES]))

    best, best_cost = start, cost(start)
    for _ in range(rounds):
        for role in roles:
            for step in steps:
                candidate = list(best)
                candidate[role] = min(ph.MAX_PREDICTOR_WEIGHT, max(1, candidate[role] + step))
                c = cost(tuple(candidate))
                if c < best_cost:
                    best, best_cost = tuple(candidate), c
                    print(f"role {role}: {','.join(map(str, best))} {100 * (best_cost - 1):+.3f}%", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="*", type=_parse, help="weight sets to measure (10 ints, by role)")
    parser.add_argument("--search", action="store_true", help="run the coordinate search")
    parser.add_argument("--start", type=_parse, default=ph.DEFAULT_PREDICTOR_WEIGHTS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=lambda t: [int(v) for v in t.split(",")], default=list(STEPS),
                        help="changes tried per role, e.g. -2,-1,1,2 for a finer search")
    parser.add_argument("--roles", type=lambda t: [int(v) for v in t.split(",")], default=list(range(10)),
                        help="roles searched (0-6 plain, 7-8 guided, 9 linear)")
    args = parser.parse_args()
    codec = Codec.load()
    images = list(dev_images(MODALITIES))  # never the held-out files
    if args.search:
        print("trained:", ",".join(map(str, search(codec, images, args.start, args.rounds, args.steps, args.roles))))
        return
    base = coded_bytes(codec, images, ph.DEFAULT_PREDICTOR_WEIGHTS)
    rows = {}
    for weights in args.weights or [ph.V5_PREDICTOR_WEIGHTS]:
        rows[",".join(map(str, weights))] = _change(coded_bytes(codec, images, weights), base)
    print(json.dumps({"baseline (formats 1-4)": base, "change %": rows}, indent=1))


if __name__ == "__main__":
    main()
