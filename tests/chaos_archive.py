"""Processes for the kill test (test_maintenance_chaos.py): an encoder committing rounds of
images (new ones, and new versions of earlier ones) and a maintainer compacting and vacuuming,
both killed at random points.

    python -m tests.chaos_archive encode URI ROUNDS
    python -m tests.chaos_archive maintain URI [--once]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
import time

import numpy as np

PER_ROUND = 3


def pixels(image_id: str, version: int) -> np.ndarray:
    from tests.conftest import smooth_image

    seed = int.from_bytes(hashlib.sha256(f"{image_id}@{version}".encode()).digest()[:4], "little")
    return smooth_image(np.random.default_rng(seed), (16, 17 + seed % 5), 12)


def expected(rounds: int) -> dict[str, int]:
    """id -> its latest version after `rounds` rounds."""
    out = {}
    for r in range(rounds):
        for k in range(PER_ROUND):
            out[f"c{r:03d}-{k}"] = 0
        if r:
            out[f"c{r - 1:03d}-0"] = 1
    return out


def round_images(r: int) -> list[tuple[str, int]]:
    return [(f"c{r:03d}-{k}", 0) for k in range(PER_ROUND)] + ([(f"c{r - 1:03d}-0", 1)] if r else [])


def encode(uri: str, rounds: int) -> None:
    import fsspec

    from lowrank_batch import Codec
    from lowrank_batch.archive import UnitWriter
    from lowrank_batch.archive.schema import COMMITS_DIR

    fs, root = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    done = {n.split("-enc", 1)[1].split("-")[0] for n in (p.rsplit("/", 1)[-1] for p in
            fs.glob(f"{root}/{COMMITS_DIR}/*.json")) if "-enc" in n}
    codec = Codec.load()
    for r in range(rounds):
        if f"{r:03d}" in done:
            continue
        rows = []
        for image_id, version in round_images(r):
            enc = codec.encode(pixels(image_id, version), 12)
            latent, residual = enc.split()
            a = pixels(image_id, version)
            rows.append({"image_id": image_id, "source_uri": f"s3://src/{image_id}", "source_etag": f"v{version}",
                         "source_size": 1, "shape": list(a.shape), "dtype": a.dtype.name, "bits_stored": 12,
                         "mode": enc.mode, "max_error": 0, "latent": latent, "residual": residual,
                         "pixel_sha256": enc.pixel_sha256, "model_sha256": enc.model_sha256,
                         "adapter_sha256": None, "psnr": None, "encoded_bytes": len(latent) + len(residual),
                         "codec_version": "chaos", "metadata_json": "{}", "run_id": "chaos", "unit_id": f"enc{r:03d}"})
        UnitWriter(fs, root, f"enc{r:03d}", "chaos").write(rows)
        print(f"committed {r}", flush=True)


def maintain(uri: str, once: bool) -> None:
    from lowrank_batch.archive.maintenance import compact, vacuum
    from lowrank_batch.archive.reader import ArchiveError

    while True:
        try:
            compact(uri, target_rows=16, small_rows=8)
        except ArchiveError as exc:  # started beside the archive's first encode: wait for it
            if "no archive at" not in str(exc):
                raise
            time.sleep(0.2)
            continue
        vacuum(uri, retention=dt.timedelta(seconds=2))
        print("maintained", flush=True)
        if once:
            return


if __name__ == "__main__":
    if sys.argv[1] == "encode":
        encode(sys.argv[2], int(sys.argv[3]))
    else:
        maintain(sys.argv[2], "--once" in sys.argv)
