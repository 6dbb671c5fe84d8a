"""Decode a whole archive (or a list of ids) back to files in a folder or bucket, on Ray."""

from __future__ import annotations

import time

from .decoding import ArchiveDecoder, check_request, output_ids, output_name, write_outputs
from ..ray_session import start_ray
from .job import JobOptions, plan_workers

__all__ = ["DecodeWorker", "output_name", "run_decode"]


class DecodeWorker:
    def __init__(self, archive_uri: str, out_uri: str, fmt: str, preview: bool):
        self.decoder = ArchiveDecoder.open(archive_uri)
        self.out_uri, self.fmt, self.preview = out_uri, fmt, preview

    def decode(self, ids: list[str]) -> dict:
        failures: list[dict] = []
        outputs = write_outputs(self.decoder, ids, self.out_uri, self.fmt, self.preview, failures, folder=True)
        return {"decoded": sum(1 for _ in outputs), "failures": failures}


def run_decode(archive_uri: str, out_uri: str, ids: list[str] | None = None, fmt: str = "png",
               preview: bool = False, options: JobOptions = JobOptions(gpus_per_worker=0), chunk: int = 32) -> dict:
    start = time.perf_counter()
    check_request(fmt, preview)
    ids = output_ids(ArchiveDecoder.open(archive_uri), ids, fmt)  # DICOM: one per file, frames gathered
    ray = start_ray(options.address)
    workers, gpus, cpus = plan_workers(ray.cluster_resources(), options)
    actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(DecodeWorker)
    chunks = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
    pool = ray.util.ActorPool([actor.remote(archive_uri, out_uri, fmt, preview)
                               for _ in range(max(1, min(workers, len(chunks))))])
    summary = {"decoded": 0, "failed": 0, "failures": []}
    for result in pool.map_unordered(lambda a, c: a.decode.remote(c), chunks):
        summary["decoded"] += result["decoded"]
        summary["failures"] += result["failures"]
    summary["failed"] = len(summary["failures"])
    summary["seconds"] = time.perf_counter() - start
    return summary
