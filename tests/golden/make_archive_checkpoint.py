"""Generate the golden archive with a checkpoint in the first release's checkpoint format.

    PYTHONPATH=. python -m tests.golden.make_archive_checkpoint

Writes tests/golden/archive_checkpoint_v1/: a small local archive (data files, commit
records, a tombstone, a failure, superseded versions), a checkpoint written by the code of
that time (`_checkpoints/*.parquet`, checkpoint format 1, with dicts as the index), two
records committed after it, the source pixels (`pixels.npz`) and `expected.json` (what that
code's `Archive.open` gave: ids, sources, versions, failures). tests/test_checkpoint_compat.py
opens it with today's code. Never regenerate it: it stands for archives that already exist.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "archive_checkpoint_v1"


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:20]
    img = 2000 + 900 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + rng.normal(0, 20, (16, 20))
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


def main() -> None:
    from lowrank_batch import Codec
    from lowrank_batch.archive import Archive, UnitWriter
    from lowrank_batch.archive import checkpoint as ckpt
    from lowrank_batch.archive.layout import write_tombstones
    from lowrank_batch.archive.reader import parse_record

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    fs, root = fsspec.core.url_to_fs(str(OUT))
    codec = Codec.load()
    pixels = {}

    def commit(unit: str, ids: list[str], etag: str) -> None:
        rows = []
        for image_id in ids:
            a = _image(len(pixels) + 1)
            pixels[f"{image_id}@{etag}"] = a
            enc = codec.encode(a, 12)
            latent, residual = enc.split()
            rows.append({"image_id": image_id, "source_uri": f"file:///src/{image_id}", "source_etag": etag,
                         "source_size": 5, "shape": list(a.shape), "dtype": "uint16", "bits_stored": 12,
                         "mode": enc.mode, "max_error": 0, "latent": latent, "residual": residual,
                         "pixel_sha256": enc.pixel_sha256, "model_sha256": enc.model_sha256,
                         "adapter_sha256": None, "psnr": None, "encoded_bytes": len(latent) + len(residual),
                         "codec_version": "golden", "metadata_json": "{}", "run_id": "golden", "unit_id": unit})
        UnitWriter(fs, root, unit, "golden").write(rows)

    commit("u0", ["a.png", "b.png", "c.png"], "e1")
    commit("u1", ["a.png", "d.png"], "e2")  # a.png superseded
    commit("u2", ["e.png", "f.png"], "e1")
    write_tombstones(fs, root, "prune-golden", ["f.png"])
    UnitWriter(fs, root, "ufail", "golden").write([], failures=[{
        "image_id": "bad.png", "source_uri": "file:///src/bad.png", "stage": "decode",
        "error": "InvalidImageError", "message": "not an image"}])
    assert ckpt.checkpoint(fs, root, parse_record, force=True)
    commit("u3", ["b.png", "g.png"], "e3")  # after the checkpoint: read on top of it
    commit("u4", ["h.png"], "e1")

    archive = Archive.open(str(OUT))
    expected = {"ids": archive.ids(), "sources": archive.sources,
                "versions": {i: archive.versions(i) for i in archive.ids()},
                "failures": [f["image_id"] for f in archive.failures()],
                "live_etags": {i: archive.sources[i][1] for i in archive.ids()}}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
    np.savez_compressed(OUT / "pixels.npz", **pixels)


if __name__ == "__main__":
    main()
