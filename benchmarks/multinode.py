"""The job on a simulated three-node cluster against one node, and the cost of shipping weights.

    python -m benchmarks.multinode [--images 48] [--size 256]

1. Throughput: the same images encoded by 2 workers on one node (a head with 2 CPUs) and on
   three nodes (a CPU:0 head, the driver's node, and 2 worker nodes of 1 CPU each), each node a
   separate `ray start` with its own HOME and store (tests/multinode.py). One machine's cores
   serve both, so this measures the multi-node overhead (raylets, object transfers, weights
   fetched from the archive by each node), not a speed-up.
2. Weights: time and bytes to copy the shipped model (and an adapter) into an archive on a real
   S3 server (SeaweedFS) and to fetch them on a node with an empty store (then cached).
Prints JSON and writes benchmarks/results/multinode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_job import make_tiles  # noqa: E402
from tests.multinode import start_cluster  # noqa: E402


def run_job(cluster, src: Path, dst: Path) -> dict:
    cmd = ["encode", str(src), str(dst), "--address", cluster.gcs, "--workers", "2", "--gpus-per-worker", "0",
           "--batch-size", "4"]
    start = time.perf_counter()
    result = cluster.run_cli(cmd, node=cluster.head, timeout=1200)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"encode failed ({result.returncode}): {result.stdout[-2000:]} {result.stderr[-2000:]}")
    summary = json.loads(next((dst / "runs").glob("*.json")).read_text())
    return {"nodes": len(cluster.nodes), "encoded": summary["encoded"], "job_seconds": summary["seconds"],
            "startup_seconds": summary.get("startup_seconds"), "process_wall_seconds": wall,
            "megapixels_per_second": summary["megapixels_per_second"], "weights_shipped": summary.get("weights")}


def throughput(work: Path, images: int, size: int) -> list[dict]:
    make_tiles(work / "src", images, size)
    out = []
    for label, kw in (("one node", {"workers": 0, "head_cpus": 2}),
                      ("three nodes", {"workers": 2, "cpus_per_worker": 1, "head_cpus": 0})):
        cluster = start_cluster(work / label.replace(" ", "-"), **kw)
        try:
            out.append({"cluster": label, **run_job(cluster, work / "src", work / f"dst-{label.replace(' ', '-')}")})
        finally:
            cluster.stop()
    return out


def weights_shipping(work: Path) -> dict:
    """Ship to a SeaweedFS archive, then fetch on a fresh node store (a separate process each)."""
    from tests.s3server import seaweedfs

    code = ("import json, sys, time, fsspec; from lowrank_batch.pipeline.archive_weights import *; "
            "from lowrank_batch.weights.store import WeightStore; "
            "w, files = resolve_weights(None, 'ct'); fs, root = fsspec.core.url_to_fs('s3://archive/w'); "
            "t = time.perf_counter(); shipped = ship_weights(fs, root, files); ship = time.perf_counter() - t; "
            "node = ArchiveWeights(fs, root, WeightStore(sys.argv[1])); t = time.perf_counter(); "
            "node.path(w.model_sha256); node.path(w.adapter_sha256); fetch = time.perf_counter() - t; "
            "t = time.perf_counter(); node.path(w.model_sha256); node.path(w.adapter_sha256); "
            "cached = time.perf_counter() - t; "
            "print(json.dumps({'blobs': shipped['blobs'], 'bytes': shipped['bytes'], 'ship_seconds': ship, "
            "'fetch_bytes': node.fetched_bytes, 'fetch_seconds': fetch, 'cached_seconds': cached}))")
    with seaweedfs(work / "s3", buckets=("archive",)):
        env = dict(os.environ, LOWRANK_HOME=str(work / "driver-store"), PYTHONPATH=str(ROOT))
        result = subprocess.run([sys.executable, "-c", code, str(work / "node-store")], env=env,
                                capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="multinode-bench-"))
    result = {"images": args.images, "tile": args.size, "cores": os.cpu_count(),
              "weights": weights_shipping(work), "throughput": throughput(work, args.images, args.size)}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "multinode.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
