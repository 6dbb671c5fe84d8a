"""Decode a whole archive (or a list of ids) back to files in a folder or bucket, on Ray."""

from __future__ import annotations

import time

import fsspec

from ..archive.dicom_export import export_dicom, file_ids
from ..archive.reader import Archive
from ..errors import InvalidParameterError, LowrankError
from ..images.files import image_bytes
from .job import JobOptions, plan_workers, start_ray


def output_name(image_id: str, fmt: str) -> str:
    """A flat, safe file name for an id (folders and frames folded into the name)."""
    flat = image_id.replace("/", "__")
    if fmt == "dicom":  # ids are whole files here
        return flat if flat.lower().endswith((".dcm", ".dicom")) else flat + ".dcm"
    return flat.replace("#", "_frame") + "." + fmt


class DecodeWorker:
    def __init__(self, archive_uri: str, out_uri: str, fmt: str, preview: bool):
        self.archive = Archive.open(archive_uri)
        self.out_fs, self.out_root = fsspec.core.url_to_fs(out_uri)
        self.fmt, self.preview = fmt, preview

    def decode(self, ids: list[str]) -> dict:
        done, failures = 0, []
        self.out_fs.makedirs(self.out_root, exist_ok=True)
        all_ids = self.archive.ids() if self.fmt == "dicom" else None
        for image_id in ids:
            try:
                if self.fmt == "dicom":
                    data = export_dicom(self.archive, image_id, all_ids)
                else:
                    data = image_bytes(self.archive.get(image_id, self.preview), self.fmt, image_id)
                self.out_fs.pipe_file(f"{self.out_root.rstrip('/')}/{output_name(image_id, self.fmt)}", data)
                done += 1
            except (LowrankError, OSError) as exc:
                failures.append({"image_id": image_id, "error": type(exc).__name__, "message": str(exc)[:500]})
        return {"decoded": done, "failures": failures}


def run_decode(archive_uri: str, out_uri: str, ids: list[str] | None = None, fmt: str = "png",
               preview: bool = False, options: JobOptions = JobOptions(gpus_per_worker=0), chunk: int = 32) -> dict:
    start = time.perf_counter()
    if fmt == "dicom" and preview:
        raise InvalidParameterError("a preview cannot be written as DICOM: it is not the archived image")
    all_ids = Archive.open(archive_uri).ids()
    ids = ids or all_ids
    if fmt == "dicom":  # one DICOM file per source file: frames gathered by the worker
        ids = file_ids(all_ids, ids)
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
