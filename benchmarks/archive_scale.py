"""The archive at hospital scale on a real S3 server (SeaweedFS): open, decode by id, nightly rerun.

    python -m benchmarks.archive_scale [--rows 1000000] [--commits 50000] [--sources 100000]
                                       [--sample 400] [--before-code /path/to/old/checkout]

Builds a synthetic archive fast by writing commit records and data files directly (each commit
names `rows/commits` rows; data files hold 1,000 rows, several commits sharing one; every row
a tiny encoded image, plus one real 512x512 CT in a unit-sized file of its own), uploads
`sources` tiny PNGs whose ETags the first `sources` rows carry (so a rerun finds them
archived), then measures, with the code of --before-code (default: none) and with this tree:
open time, objects and bytes read to open, decode-by-id latency (median/max of 15) and bytes,
and a no-change nightly rerun's seconds and requests. A full run's time is measured on
`sample` fresh sources with the Ray job and scaled linearly to `sources` (said so in the output).
Prints JSON; writes benchmarks/results/archive_scale.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE, SRC = "s3://archive/big", "s3://src/night"
FILE_ROWS = 1000


def _png(k: int) -> bytes:
    import numpy as np
    from PIL import Image

    a = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 37 + k) % 4096
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def build(rows: int, commits: int, sources: int) -> dict:
    """Write the synthetic archive and the sources; returns what a measurement needs."""
    import fsspec
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lowrank_batch import Codec
    from lowrank_batch.archive import UnitWriter
    from lowrank_batch.archive.checkpoint import record_name
    from lowrank_batch.archive.schema import BLOB_COLUMNS, ROWS_PER_GROUP, SCHEMA
    from lowrank_batch.devcorpus import dev_images

    fs = fsspec.filesystem("s3")
    codec = Codec.load()
    tiny = codec.encode((np.arange(64).reshape(8, 8) % 1024).astype(np.uint16), 10)
    latent, residual = tiny.split()
    start = time.perf_counter()
    etags, sizes, batch = {}, {}, {}
    for k in range(sources):
        data = _png(k)
        etags[k], sizes[k] = hashlib.md5(data).hexdigest(), len(data)
        batch[f"src/night/{k // 1000:03d}/img{k:06d}.png"] = data
        if len(batch) == 2000:
            fs.pipe(batch)
            batch = {}
    if batch:
        fs.pipe(batch)
    upload_s = time.perf_counter() - start

    def row(k: int) -> dict:
        image_id = f"{k // 1000:03d}/img{k:06d}.png"
        return {"image_id": image_id, "source_uri": f"{SRC}/{image_id}", "source_etag": etags.get(k, "synthetic"),
                "source_size": sizes.get(k, 1), "shape": [8, 8], "dtype": "uint16", "bits_stored": 10,
                "mode": "lossless", "max_error": 0, "latent": latent, "residual": residual,
                "pixel_sha256": tiny.pixel_sha256, "model_sha256": tiny.model_sha256, "adapter_sha256": None,
                "psnr": None, "encoded_bytes": len(latent) + len(residual), "codec_version": "bench",
                "metadata_json": "{}", "run_id": "bench", "unit_id": "bench"}

    per_commit = max(1, rows // commits)
    # a history, not one burst: commits spread over the last 30 days, as years of nightly runs are
    # (only the last hour's records sort above a checkpoint's marker and are listed on open)
    now = dt.datetime.now(dt.timezone.utc)
    spacing = dt.timedelta(days=30) / max(1, commits)
    when = lambda n: now - dt.timedelta(days=30) + n * spacing  # noqa: E731
    start = time.perf_counter()
    stats = [c for c in SCHEMA.names if c not in BLOB_COLUMNS]
    records: dict[str, bytes] = {}
    written = 0
    for first in range(0, rows, FILE_ROWS):
        chunk = [row(k) for k in range(first, min(rows, first + FILE_ROWS))]
        name = f"bench-{first // FILE_ROWS:06d}"
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA), buf, row_group_size=ROWS_PER_GROUP,
                       compression="none", write_statistics=stats)
        fs.pipe_file(f"archive/big/data/{name}.parquet", buf.getvalue())
        for c in range(0, len(chunk), per_commit):  # several commits name disjoint rows of one file
            part = range(c, min(len(chunk), c + per_commit))
            record = {"file": f"data/{name}.parquet", "unit_id": name, "run_id": "bench", "rows": len(part),
                      "index": {chunk[i]["image_id"]: [i // ROWS_PER_GROUP, i % ROWS_PER_GROUP] for i in part},
                      "sources": {chunk[i]["image_id"]: [chunk[i]["source_uri"], chunk[i]["source_etag"],
                                                         chunk[i]["source_size"]] for i in part},
                      "committed_at": when(written).isoformat(timespec="milliseconds"), "stats": {},
                      "failures": []}
            records[f"archive/big/_commits/{record_name(f'{name}-{c:04d}', when(written))}"] = \
                json.dumps(record).encode()
            written += 1
        if len(records) >= 5000:
            fs.pipe(records)
            records = {}
    if records:
        fs.pipe(records)
    big_pixels = next(im for im in dev_images(("ct",)) if im.pixels.shape == (512, 512)).pixels
    big = codec.encode(big_pixels, 14)
    b_latent, b_residual = big.split()
    ct = dict(row(rows + 1), image_id="ct/big.dcm", latent=b_latent, residual=b_residual, shape=[512, 512],
              dtype=big.layout.dtype, bits_stored=14, pixel_sha256=big.pixel_sha256,
              encoded_bytes=len(b_latent) + len(b_residual))
    ct_unit = [dict(row(rows + 2 + k), image_id=f"ct/small{k:02d}.png") for k in range(15)] + [ct]
    UnitWriter(fs, "archive/big", "u-ct", "bench").write(ct_unit)
    np.save(Path(tempfile.gettempdir()) / "archive_scale_ct.npy", big_pixels)
    return {"rows": rows + len(ct_unit), "commits": written + 1, "sources": sources,
            "build_seconds": time.perf_counter() - start, "upload_seconds": upload_s,
            "ct_encoded_bytes": big.encoded_bytes}


MEASURE = r"""
import json, os, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np, s3fs
calls, got = {}, {"bytes": 0}
orig_call, orig_fetch = s3fs.S3FileSystem._call_s3, s3fs.core.S3File._fetch_range
async def counting(self, method, *a, **kw):
    out = await orig_call(self, method, *a, **kw)
    calls[method] = calls.get(method, 0) + 1
    if method == "get_object":
        got["bytes"] += int(out.get("ContentLength") or 0)
    return out
def fetch(self, start, end):
    data = orig_fetch(self, start, end)
    got["bytes"] += len(data)
    return data
s3fs.S3FileSystem._call_s3, s3fs.core.S3File._fetch_range = counting, fetch
from fsspec.asyn import sync  # the sync call_s3 (listings after a marker) is bound apart: count it too
s3fs.S3FileSystem.call_s3 = lambda self, method, *a, **kw: sync(self.loop, counting, self, method, *a, **kw)
from lowrank_batch.archive import Archive
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings
out = {"code": __import__("lowrank_batch").__file__}
def reset():
    calls.clear(); got["bytes"] = 0
reset(); t = time.perf_counter(); a = Archive.open(sys.argv[1]); ids = a.ids()
out.update(open_seconds=time.perf_counter() - t, open_requests=dict(calls), open_objects_read=calls.get("get_object", 0) + calls.get("head_object", 0), open_bytes=got["bytes"], images=len(ids))
ct = np.load(Path(tempfile.gettempdir()) / "archive_scale_ct.npy")
assert np.array_equal(a.get("ct/big.dcm"), ct)
times, first = [], None
for k in range(15):
    reset(); t = time.perf_counter(); a.get("ct/big.dcm"); times.append(time.perf_counter() - t)
    first = first if first is not None else (got["bytes"], sum(calls.values()))
out.update(get_median_ms=1e3 * statistics.median(times), get_max_ms=1e3 * max(times),
           get_bytes_first=first[0], get_requests_first=first[1], get_bytes_cached_footer=got["bytes"])
b = Archive.open(sys.argv[1]); reset(); t = time.perf_counter(); b.get("ct/big.dcm")
out.update(cold_get_ms=1e3 * (time.perf_counter() - t), cold_get_bytes=got["bytes"])
reset(); t = time.perf_counter()
s = run_encode(sys.argv[2], sys.argv[1], EncodeSettings(), JobOptions(gpus_per_worker=0, batch_size=64), log=lambda *_: None)
out.update(rerun_seconds=time.perf_counter() - t, rerun_encoded=s["encoded"], rerun_skipped=s["skipped"],
           rerun_requests=sum(calls.values()), rerun_get_objects=calls.get("get_object", 0))
print("RESULT " + json.dumps(out))
"""


def measure(code_root: Path, env: dict) -> dict:
    script = Path(tempfile.gettempdir()) / "archive_scale_measure.py"
    script.write_text(MEASURE)
    run_env = dict(env, PYTHONPATH=str(code_root))
    done = subprocess.run([sys.executable, str(script), ARCHIVE, SRC], env=run_env, cwd=code_root,
                          capture_output=True, text=True, timeout=3600)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"measurement with {code_root} failed: {done.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


def full_run(sample: int) -> dict:
    """Seconds of a first run of `sample` fresh sources with the Ray job (2 CPUs)."""
    import fsspec
    import ray

    from lowrank_batch.pipeline.job import JobOptions, run_encode
    from lowrank_batch.pipeline.worker import EncodeSettings

    fs = fsspec.filesystem("s3")
    fs.pipe({f"src/sample/img{k:06d}.png": _png(k + 7) for k in range(sample)})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    opts = JobOptions(gpus_per_worker=0, batch_size=64)
    run_encode("s3://src/warm", "s3://archive/warm", EncodeSettings(), opts, log=lambda *_: None) \
        if fs.exists("src/warm") else None
    summary = run_encode("s3://src/sample", "s3://archive/sample", EncodeSettings(), opts, log=lambda *_: None)
    ray.shutdown()
    return {"sample": sample, "seconds": summary["seconds"], "encoded": summary["encoded"],
            "startup_seconds": summary.get("startup_seconds"), "batch_size": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--commits", type=int, default=50_000)
    parser.add_argument("--sources", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=400)
    parser.add_argument("--before-code", type=Path, default=None, help="a checkout of the code before checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "archive_scale.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import fsspec

    from lowrank_batch.archive.checkpoint import checkpoint
    from lowrank_batch.archive.reader import parse_record
    from tests.s3server import seaweedfs

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp), buckets=("src", "archive")) as endpoint:
        env = dict(os.environ)
        result["archive"] = build(args.rows, args.commits, args.sources)
        print(json.dumps(result["archive"]), flush=True)
        if args.before_code:
            result["before"] = measure(args.before_code, env)
            print("before", json.dumps(result["before"]), flush=True)
        fs = fsspec.filesystem("s3")
        start = time.perf_counter()
        checkpoint(fs, "archive/big", parse_record, force=True)  # the first one folds the whole history
        result["first_checkpoint_seconds"] = time.perf_counter() - start
        result["after"] = measure(ROOT, env)
        print("after", json.dumps(result["after"]), flush=True)
        result["full_run"] = full_run(args.sample)
        # start-up (Ray, actors, weights, until the first unit is back) once, then the steady rate
        run = result["full_run"]
        steady = (run["seconds"] - run["startup_seconds"]) / max(1, run["encoded"] - run["batch_size"])
        result["full_run_extrapolated_seconds"] = run["startup_seconds"] + steady * args.sources
        for side in ("before", "after"):
            if side in result:
                result[side]["rerun_fraction_of_full_run"] = (result[side]["rerun_seconds"]
                                                              / result["full_run_extrapolated_seconds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
