"""How much the neighbouring slice of a volume could save as context (the issue's "context across
the slices of a CT/MR series" route), measured before building it. Dev data only.

    python -m benchmarks.interslice

Codes a slice's plane with format 5's tables twice: alone, and with the slice `dz` below as the
side information the guided predictors already use for the latent reconstruction
(x_W + R - R_W and x_N + R - R_N, with R the other slice; the blend weighs them by their
errors). The guided pair at format 5's default maximum weights (12) and raised to 36 (the
linear predictor's). Volumes: TotalSegmentator's 1 mm CT brain atlas (an averaged, smooth
volume: an upper bound for real, noisy CT), the enhanced CT's two frames (10 mm apart) and
emri_small's 64^2 MR frames. Plane stream bytes only (no header, no latents).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lowrank_batch.codec import blend
from lowrank_batch.codec.residual_coder import V5_TABLES, encode_plane
from lowrank_batch.devcorpus import dicom_frames, package_dir

SIDE_PATCH = 1 << 12  # one "patch" wider than any slice: the side's gradient is used everywhere
RAISED = tuple(blend.TRAINED_PREDICTOR_WEIGHTS[:7]) + (36, 36) + tuple(blend.TRAINED_PREDICTOR_WEIGHTS[9:])


def plane_bytes(plane: np.ndarray, side: np.ndarray | None = None, weights=None) -> int:
    tables = V5_TABLES if weights is None else dataclasses.replace(V5_TABLES, weight_table=blend.weight_table(weights))
    plane = np.ascontiguousarray(plane, dtype=np.int64)
    side = None if side is None else np.ascontiguousarray(side, dtype=np.int64)
    return len(encode_plane(plane, int(plane.min()), int(plane.max()), 0, side, SIDE_PATCH, tables)[0])


def pair(name: str, current: np.ndarray, below: np.ndarray) -> dict:
    alone = plane_bytes(current)
    guided = plane_bytes(current, below)
    raised = plane_bytes(current, below, RAISED)
    row = {"slice": name, "alone": alone, "with_slice": guided, "with_slice_raised": raised,
           "change_pct": round(100 * (guided / alone - 1), 2),
           "change_raised_pct": round(100 * (raised / alone - 1), 2)}
    print(json.dumps(row))
    return row


def main() -> None:
    rows = []
    ts = package_dir("totalsegmentator")
    if ts:
        import nibabel

        volume = np.asanyarray(nibabel.load(os.path.join(ts, "resources", "ct_brain_atlas_1mm.nii.gz")).dataobj)
        for z in (60, 90, 120):
            for dz in (1, 2, 5):
                rows.append(pair(f"ct_brain_atlas#{z} <- {z - dz} ({dz} mm)", np.rot90(volume[:, :, z]),
                                 np.rot90(volume[:, :, z - dz])))
    for filename, modality in (("eCT_Supplemental.dcm", "ct"), ("emri_small.dcm", "mr")):
        frames = [f.pixels for f in dicom_frames(filename, modality, max_frames=2)]
        if len(frames) == 2:
            rows.append(pair(f"{filename}#1 <- #0", frames[1], frames[0]))
    print(json.dumps({"pairs": len(rows)}))


if __name__ == "__main__":
    main()
