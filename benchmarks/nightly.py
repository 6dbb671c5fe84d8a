"""Cost of a no-change nightly rerun against the first full run, on a real S3 server.

    python -m benchmarks.nightly [--images 10000]

Uploads N small 16-bit PNGs to SeaweedFS, archives them (first run), then reruns with nothing
changed. Reports seconds for both and the object-store requests the rerun makes (all of its
work is in the driver: listing, reading the commit records, writing the run summary).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nightly.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import fsspec
    import ray
    import s3fs

    from lowrank_batch.pipeline.job import JobOptions, run_encode
    from lowrank_batch.pipeline.worker import EncodeSettings
    from tests.s3server import seaweedfs

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp), buckets=("src", "archive")):
        fs = fsspec.filesystem("s3")
        batch = {}
        for k in range(args.images):
            a = (rng.normal(2000, 300, (32, 32)) + np.arange(32)[None] * 20).clip(0, 4095).astype(np.uint16)
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            batch[f"src/night/{k // 1000:02d}/img{k:05d}.png"] = buf.getvalue()
            if len(batch) == 500:
                fs.pipe(batch)
                batch = {}
        if batch:
            fs.pipe(batch)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        opts = JobOptions(gpus_per_worker=0, batch_size=64)
        first = run_encode("s3://src/night", "s3://archive/night", EncodeSettings(), opts, log=lambda *_: None)
        calls = {"n": 0}
        original = s3fs.S3FileSystem._call_s3

        async def counting(self, method, *a, **kw):
            calls["n"] += 1
            return await original(self, method, *a, **kw)

        s3fs.S3FileSystem._call_s3 = counting
        s3fs.S3FileSystem.clear_instance_cache()
        start = time.perf_counter()
        again = run_encode("s3://src/night", "s3://archive/night", EncodeSettings(), opts, log=lambda *_: None)
        rerun_s = time.perf_counter() - start
        s3fs.S3FileSystem._call_s3 = original
        ray.shutdown()
    result = {"images": args.images, "first_run_seconds": first["seconds"], "first_run_encoded": first["encoded"],
              "rerun_seconds": rerun_s, "rerun_encoded": again["encoded"], "rerun_skipped": again["skipped"],
              "rerun_requests": calls["n"], "units": -(-args.images // 64)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("| run | seconds | object-store requests (driver) | encoded | skipped |\n|---|---|---|---|---|")
    print(f"| first (full) | {result['first_run_seconds']:.1f} | - | {first['encoded']} | {first['skipped']} |")
    print(f"| no-change rerun | {rerun_s:.1f} | {calls['n']} | {again['encoded']} | {again['skipped']} |")


if __name__ == "__main__":
    main()
