"""The archive at hospital scale on a real S3 server (SeaweedFS): open, decode by id, nightly rerun.

    python -m benchmarks.archive_scale [--rows 1000000] [--commits 50000] [--sources 100000]
                                       [--sample 400] [--before-code /path/to/old/checkout]

Builds a synthetic archive fast by writing data files and commit records directly (each commit
names `rows/commits` rows; data files hold 1,000 rows, several commits sharing one; every row a
tiny encoded image, plus one real 512x512 CT in a unit-sized file of its own), uploads `sources`
tiny PNGs whose ETags the first `sources` rows carry (so a rerun finds them archived), writes
the first checkpoint (folding the whole history once), then measures, with the code of
--before-code (default: none) and with this tree, on that same archive: open time (+ ids),
objects and bytes read to open, decode-by-id latency (median/max of 15) split into the
archive's part (locate the row, ranged read) and the codec's compute, locating thousands of ids,
and a no-change nightly rerun's seconds and requests (ARCHIVE_SCALE_PROFILE=file: its cProfile).
A full run's time is measured on `sample` fresh sources with the Ray job (start-up once, then
the steady rate scaled to `sources`: said so in the output).
Prints JSON; writes benchmarks/results/archive_scale.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
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

    a = (np.arange(64, dtype=np.int64).reshape(8, 8) * 37 + k) % 4096  # k past 65,535 too
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _upload_sources(fs, sources: int) -> tuple[dict, dict, float]:
    """`sources` tiny PNGs under s3://src/night/; their ETags (MD5, one-part PUT) and sizes."""
    start = time.perf_counter()
    etags, sizes, batch = {}, {}, {}
    for k in range(sources):
        data = _png(k)
        etags[k], sizes[k] = hashlib.md5(data).hexdigest(), len(data)
        batch[f"src/night/{_image_id(k)}"] = data
        if len(batch) == 4000:
            fs.pipe(batch)
            batch = {}
    if batch:
        fs.pipe(batch)
    return etags, sizes, time.perf_counter() - start


def _image_id(k: int) -> str:
    return f"{k // 1000:03d}/img{k:06d}.png"


def _tiny_row(codec) -> dict:
    """Every synthetic row's columns but id and source: one real tiny encoded image."""
    import numpy as np

    tiny = codec.encode((np.arange(64).reshape(8, 8) % 1024).astype(np.uint16), 10)
    latent, residual = tiny.split()
    return {"shape": [8, 8], "dtype": "uint16", "bits_stored": 10, "mode": "lossless", "max_error": 0,
            "latent": latent, "residual": residual, "pixel_sha256": tiny.pixel_sha256,
            "model_sha256": tiny.model_sha256, "adapter_sha256": None, "psnr": None,
            "encoded_bytes": len(latent) + len(residual), "codec_version": "bench", "metadata_json": "{}",
            "run_id": "bench", "unit_id": "bench"}


def _data_file(ids: list[str], uris: list[str], etags: list[str], sizes: list[int], template: dict) -> bytes:
    """One data file of synthetic rows, built column by column (constants repeated, not per-row dicts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lowrank_batch.archive.schema import BLOB_COLUMNS, ROWS_PER_GROUP, SCHEMA

    n = len(ids)
    given = {"image_id": ids, "source_uri": uris, "source_etag": etags, "source_size": sizes}
    columns = {}
    for field in SCHEMA:
        if field.name in given:
            columns[field.name] = pa.array(given[field.name], field.type)
        else:
            value = template.get(field.name)
            columns[field.name] = pa.nulls(n, field.type) if value is None else \
                pa.repeat(pa.scalar(value, field.type), n)
    buf = io.BytesIO()
    pq.write_table(pa.table(columns, schema=SCHEMA), buf, row_group_size=ROWS_PER_GROUP, compression="none",
                   write_statistics=[c for c in SCHEMA.names if c not in BLOB_COLUMNS])
    return buf.getvalue()


def _write_history(fs, rows: int, commits: int, etags: dict, sizes: dict, template: dict) -> int:
    """`rows` rows in files of FILE_ROWS, named by `commits` commit records spread over the last
    30 days, as years of nightly runs are (only the last hour's records sort above a
    checkpoint's marker): several records name disjoint rows of one file. Returns the records written."""
    from lowrank_batch.archive.checkpoint import record_name
    from lowrank_batch.archive.schema import ROWS_PER_GROUP

    per_commit = max(1, rows // commits)
    now = dt.datetime.now(dt.timezone.utc)
    spacing = dt.timedelta(days=30) / max(1, commits)
    records: dict[str, bytes] = {}
    files: dict[str, bytes] = {}
    written = 0
    for first in range(0, rows, FILE_ROWS):
        ks = range(first, min(rows, first + FILE_ROWS))
        ids = [_image_id(k) for k in ks]
        sources = [[f"{SRC}/{i}", etags.get(k, "synthetic"), sizes.get(k, 1)] for k, i in zip(ks, ids)]
        name = f"bench-{first // FILE_ROWS:06d}"
        files[f"archive/big/data/{name}.parquet"] = _data_file(ids, *map(list, zip(*sources)), template)
        for c in range(0, len(ids), per_commit):
            when = now - dt.timedelta(days=30) + written * spacing
            part = range(c, min(len(ids), c + per_commit))
            record = {"file": f"data/{name}.parquet", "unit_id": name, "run_id": "bench", "rows": len(part),
                      "index": {ids[i]: [i // ROWS_PER_GROUP, i % ROWS_PER_GROUP] for i in part},
                      "sources": {ids[i]: sources[i] for i in part},
                      "committed_at": when.isoformat(timespec="milliseconds"), "stats": {}, "failures": []}
            records[f"archive/big/_commits/{record_name(f'{name}-{c:04d}', when)}"] = json.dumps(record).encode()
            written += 1
        if len(files) >= 20:
            fs.pipe(files)
            files = {}
        if len(records) >= 4000:
            fs.pipe(records)
            records = {}
    for batch in (files, records):
        if batch:
            fs.pipe(batch)
    return written


def _write_ct_unit(fs, codec, template: dict) -> tuple[int, int]:
    """One real 512x512 CT among 15 tiny images, in a unit-sized file committed the usual way;
    its pixels go to a temp file for the measurement's exactness check. (rows, encoded bytes)"""
    import numpy as np

    from lowrank_batch.archive import UnitWriter
    from lowrank_batch.devcorpus import dev_images

    pixels = next(im for im in dev_images(("ct",)) if im.pixels.shape == (512, 512)).pixels
    big = codec.encode(pixels, 14)
    latent, residual = big.split()
    source = {"source_uri": f"{SRC}/ct", "source_etag": "synthetic", "source_size": 1}
    ct = dict(template, **source, image_id="ct/big.dcm", latent=latent, residual=residual, shape=[512, 512],
              dtype=big.layout.dtype, bits_stored=14, pixel_sha256=big.pixel_sha256,
              encoded_bytes=len(latent) + len(residual))
    unit = [dict(template, **source, image_id=f"ct/small{k:02d}.png") for k in range(15)] + [ct]
    UnitWriter(fs, "archive/big", "u-ct", "bench").write(unit)
    np.save(Path(tempfile.gettempdir()) / "archive_scale_ct.npy", pixels)
    return len(unit), big.encoded_bytes


def build(rows: int, commits: int, sources: int) -> dict:
    """Write the synthetic archive and the sources; returns what a measurement needs."""
    import fsspec

    from lowrank_batch import Codec

    fs = fsspec.filesystem("s3")
    codec = Codec.load()
    etags, sizes, upload_s = _upload_sources(fs, sources)
    template = _tiny_row(codec)
    start = time.perf_counter()
    written = _write_history(fs, rows, commits, etags, sizes, template)
    ct_rows, ct_bytes = _write_ct_unit(fs, codec, template)
    return {"rows": rows + ct_rows, "commits": written + 1, "sources": sources,
            "build_seconds": time.perf_counter() - start, "upload_seconds": upload_s, "ct_encoded_bytes": ct_bytes}


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
from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings
out = {"code": __import__("lowrank_batch").__file__}
def reset():
    calls.clear(); got["bytes"] = 0
reset(); t = time.perf_counter(); a = Archive.open(sys.argv[1]); ids = a.ids()
out.update(open_seconds=time.perf_counter() - t, open_requests=dict(calls), open_objects_read=calls.get("get_object", 0) + calls.get("head_object", 0), open_bytes=got["bytes"], images=len(ids))
t = time.perf_counter(); Archive.open(sys.argv[1]).ids()  # again: the process's S3 client set up already
out.update(open_again_seconds=time.perf_counter() - t)
ct = np.load(Path(tempfile.gettempdir()) / "archive_scale_ct.npy")
d = ArchiveDecoder(a)
assert np.array_equal(d.get("ct/big.dcm"), ct)
# decode by id = the archive's part (locate the row, ranged read, join the bytes) + the codec's compute
total, archive_part, codec_part, first = [], [], [], None
for k in range(15):
    reset(); t0 = time.perf_counter(); enc = d.encoded("ct/big.dcm"); t1 = time.perf_counter()
    d.codec_for(enc).decode(enc); t2 = time.perf_counter()
    total.append(t2 - t0); archive_part.append(t1 - t0); codec_part.append(t2 - t1)
    first = first if first is not None else (got["bytes"], sum(calls.values()))
ms = lambda xs: (round(1e3 * statistics.median(xs), 1), round(1e3 * max(xs), 1))
out.update(get_median_ms=ms(total)[0], get_max_ms=ms(total)[1], get_archive_median_ms=ms(archive_part)[0],
           get_archive_max_ms=ms(archive_part)[1], get_codec_median_ms=ms(codec_part)[0],
           get_codec_max_ms=ms(codec_part)[1], get_bytes_first=first[0], get_requests_first=first[1],
           get_bytes_cached_footer=got["bytes"])
rng = __import__("random").Random(1); sample = rng.sample(ids, min(2000, len(ids)))
t = time.perf_counter(); [a._index[i] for i in sample]
out.update(locate_us_per_id=1e6 * (time.perf_counter() - t) / len(sample))
tiny = []
for i in sample[:30]:  # a tiny image in a 1,000-row file: locate + ranged read (its footer once per file)
    t = time.perf_counter(); a.row(i, ["image_id", "latent", "residual"]); tiny.append(time.perf_counter() - t)
out.update(tiny_row_median_ms=ms(tiny)[0], tiny_row_max_ms=ms(tiny)[1])
b = ArchiveDecoder(Archive.open(sys.argv[1]))  # a fresh open: the CT's footer not read yet
reset(); t = time.perf_counter(); b.encoded("ct/big.dcm")
out.update(cold_archive_get_ms=1e3 * (time.perf_counter() - t), cold_get_bytes=got["bytes"])
profile = os.environ.get("ARCHIVE_SCALE_PROFILE")
if profile:
    import cProfile; prof = cProfile.Profile(); prof.enable()
reset(); t = time.perf_counter()
s = run_encode(sys.argv[2], sys.argv[1], EncodeSettings(), JobOptions(gpus_per_worker=0, batch_size=64), log=lambda *_: None)
out.update(rerun_seconds=time.perf_counter() - t, rerun_encoded=s["encoded"], rerun_skipped=s["skipped"],
           rerun_requests=sum(calls.values()), rerun_by_kind=dict(calls), rerun_get_objects=calls.get("get_object", 0))
if profile:
    prof.disable(); prof.dump_stats(profile)
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
    parser.add_argument("--before-code", type=Path, default=None,
                        help="a checkout of older code, measured on the same archive after its first checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "archive_scale.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import fsspec

    from lowrank_batch.archive.checkpoint import checkpoint
    from lowrank_batch.archive.reader import parse_record
    from tests.s3server import seaweedfs

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp), buckets=("src", "archive")):
        env = dict(os.environ)
        result["archive"] = build(args.rows, args.commits, args.sources)
        print(json.dumps(result["archive"]), flush=True)
        fs = fsspec.filesystem("s3")
        start = time.perf_counter()
        checkpoint(fs, "archive/big", parse_record, force=True)  # the first one folds the whole history
        result["first_checkpoint_seconds"] = time.perf_counter() - start
        print("first checkpoint", result["first_checkpoint_seconds"], flush=True)
        if args.before_code:  # the same checkpoint (its format did not change), read by the older code
            result["before"] = measure(args.before_code, env)
            print("before", json.dumps(result["before"]), flush=True)
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
