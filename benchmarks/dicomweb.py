"""The archive as DICOMweb on Ray Serve: latency and throughput on loopback.

    python -m benchmarks.dicomweb [--requests 40] [--concurrency 8]

Archives a 512² 16-bit CT (pydicom-data's 693_UNCR), a 10-frame MR and a small CT losslessly
with the Ray encode job, serves the archive with `serve` (one replica, then two) and measures:
1. latency (median and p95 over --requests sequential requests): metadata of a study, the
   first frame of the 512² CT (a lossless decode each time: nothing is cached), the CT
   rendered as a preview (?quality=50: latents only, JPEG) and in full (PNG);
2. throughput of concurrent frame requests (--concurrency client threads, each a bounded loop
   of requests) with 1 and 2 replicas.
Targets (issue 18): study metadata <= 50 ms, first frame <= 150 ms, rendered preview <= 50 ms.
Prints a Markdown table and writes benchmarks/results/dicomweb.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pydicom  # noqa: E402
import requests  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FILES = {"ct512.dcm": "693_UNCR.dcm", "mr_frames.dcm": "emri_small.dcm", "ct_small.dcm": "CT_small.dcm"}
OCTETS = {"Accept": 'multipart/related; type="application/octet-stream"'}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(url: str, headers: dict, n: int) -> dict:
    with requests.Session() as session:
        session.get(url, headers=headers, timeout=120).raise_for_status()  # warm: connection, caches
        times = []
        for _ in range(n):
            start = time.perf_counter()
            r = session.get(url, headers=headers, timeout=120)
            r.raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
            "bytes": len(r.content)}


def _throughput(url: str, concurrency: int, per_client: int) -> dict:
    def client(_):
        with requests.Session() as session:
            for _ in range(per_client):
                session.get(url, headers=OCTETS, timeout=300).raise_for_status()

    requests.get(url, headers=OCTETS, timeout=300).raise_for_status()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    seconds = time.perf_counter() - start
    return {"requests": concurrency * per_client, "seconds": round(seconds, 2),
            "requests_per_second": round(concurrency * per_client / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=6)
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, help="1 on a GPU machine: refined previews")
    args = parser.parse_args()

    from ray import serve

    from lowrank_batch.pipeline.job import JobOptions, run_encode, start_ray
    from lowrank_batch.pipeline.worker import EncodeSettings
    from lowrank_batch.serve.app import ServeOptions, start

    work = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    try:
        src = work / "src"
        src.mkdir()
        for name, source in FILES.items():
            shutil.copy(get_testdata_file(source), src / name)
        ray = start_ray(None)
        summary = run_encode(str(src), str(work / "archive"), EncodeSettings(), JobOptions(gpus_per_worker=0),
                             log=lambda _: None)
        assert summary["failed"] == 0, summary["failures"]
        ct = pydicom.dcmread(src / "ct512.dcm", stop_before_pixels=True)
        port = _free_port()
        results: dict = {"cpus": os.cpu_count(), "files": FILES, "latency": {}, "throughput": {}}
        for replicas in (1, 2):
            url = start(ServeOptions(str(work / "archive"), port=port, replicas=replicas,
                                     gpus_per_replica=args.gpus_per_replica,
                                     cpus_per_replica=min(1.0, ray.cluster_resources().get("CPU", 1) / 2)))
            inst = f"{url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
            if replicas == 1:
                lat = results["latency"]
                lat["study_metadata"] = _timed(f"{url}/studies/{ct.StudyInstanceUID}/metadata", {}, args.requests)
                lat["first_frame_512_ct"] = _timed(f"{inst}/frames/1", OCTETS, args.requests)
                lat["rendered_preview_jpeg"] = _timed(f"{inst}/rendered?quality=50", {"Accept": "image/jpeg"},
                                                      args.requests)
                lat["rendered_full_png"] = _timed(f"{inst}/rendered", {"Accept": "image/png"}, args.requests)
                lat["instance_part10"] = _timed(inst, {"Accept": 'multipart/related; type="application/dicom"'},
                                                max(5, args.requests // 4))
            results["throughput"][f"{replicas}_replicas"] = _throughput(f"{inst}/frames/1", args.concurrency,
                                                                        args.per_client)
        serve.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["gpus_per_replica"] = args.gpus_per_replica
    results["load_average_1min"] = os.getloadavg()[0]  # a shared machine: other work skews the figures
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dicomweb.json").write_text(json.dumps(results, indent=1))
    print("| figure | median ms | p95 ms |\n|---|---|---|")
    for name, r in results["latency"].items():
        print(f"| {name} | {r['median_ms']} | {r['p95_ms']} |")
    print("\n| concurrent first-frame requests | requests/s |\n|---|---|")
    for name, r in results["throughput"].items():
        print(f"| {name} ({r['requests']} requests, {args.concurrency} clients) | {r['requests_per_second']} |")


if __name__ == "__main__":
    main()
