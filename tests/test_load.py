"""Load: 10,000 small images on SeaweedFS through a full run and a no-change rerun (slow:
`pytest -m slow tests/test_load.py`, about 2 minutes on 2 cores). 1% of them are broken files."""

import io
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings

IMAGES, BROKEN_EVERY = 10_000, 100


def image(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    return (rng.normal(2000, 300, (32, 32)) + np.arange(32)[None] * 20).clip(0, 4095).astype(np.uint16)


@pytest.mark.slow
def test_ten_thousand_images_then_a_no_change_rerun(cluster):
    import fsspec

    fs = fsspec.filesystem("s3")
    batch = {}
    for k in range(IMAGES):
        name = f"src/load/{k // 1000:02d}/img{k:05d}.png"
        if k % BROKEN_EVERY == 7:
            batch[name] = b"\x89PNG\r\n\x1a\n" + bytes(40)  # a PNG signature, then nothing sane
        else:
            buf = io.BytesIO()
            Image.fromarray(image(k)).save(buf, format="PNG")
            batch[name] = buf.getvalue()
        if len(batch) == 500:
            fs.pipe(batch)
            batch = {}
    broken = IMAGES // BROKEN_EVERY
    opts = JobOptions(gpus_per_worker=0, batch_size=64)
    quiet = {"log": lambda *_: None}

    start = time.perf_counter()
    first = run_encode("s3://src/load", "s3://archive/load", EncodeSettings(), opts, **quiet)
    first_s = time.perf_counter() - start
    assert (first["encoded"], first["failed"], first["skipped"]) == (IMAGES - broken, broken, 0)
    assert first["encoded"] + first["failed"] == IMAGES  # inputs = archived + failed

    start = time.perf_counter()
    again = run_encode("s3://src/load", "s3://archive/load", EncodeSettings(), opts, **quiet)
    rerun_s = time.perf_counter() - start
    # nothing changed: archived ones are skipped; the broken ones are tried again and fail again
    assert (again["encoded"], again["skipped"], again["failed"]) == (0, IMAGES - broken, broken)
    assert again["skipped"] + again["failed"] == IMAGES

    archive = Archive.open("s3://archive/load")
    assert len(archive) == IMAGES - broken
    failures = archive.failures()
    assert len(failures) == broken and all(f["stage"] == "decode" for f in failures)
    assert {f["image_id"] for f in failures} == {f"{k // 1000:02d}/img{k:05d}.png"
                                                 for k in range(IMAGES) if k % BROKEN_EVERY == 7}
    rows = sum(pq.ParquetFile(fs.open(p)).metadata.num_rows for p in fs.glob("archive/load/data/*.parquet"))
    assert rows == IMAGES - broken  # read back by pyarrow: each image exactly once
    for k in range(0, IMAGES, 97):
        if k % BROKEN_EVERY != 7:
            assert np.array_equal(ArchiveDecoder(archive).get(f"{k // 1000:02d}/img{k:05d}.png"), image(k)), k
    print(f"\n{IMAGES} images: first run {first_s:.1f} s ({first['megapixels_per_second']:.2f} MP/s), "
          f"no-change rerun {rerun_s:.1f} s")
