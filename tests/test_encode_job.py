"""The encode job on a real local Ray: mixed images, tar shards, fake GPUs, S3 to S3."""

import io
import json
import os
import shutil
import tarfile

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from lowrank_batch.archive import Archive
from lowrank_batch.images import write_image
from lowrank_batch.pipeline.job import JobError, JobOptions, plan_workers, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker

from .conftest import smooth_image


def make_sources(folder):
    """Mixed real formats; returns {id: expected array}."""
    rng = np.random.default_rng(11)
    expected = {}
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        a = smooth_image(rng, (40 + k, 52), 16)
        write_image(folder / f"ct{k}.png", a)
        expected[f"ct{k}.png"] = a
    a8 = smooth_image(rng, (33, 47), 8)
    write_image(folder / "eight.png", a8)
    expected["eight.png"] = a8
    t16 = smooth_image(rng, (25, 36), 16)
    Image.fromarray(t16).save(folder / "scan.tif")
    expected["scan.tif"] = t16
    rgb = smooth_image(rng, (28, 30, 3), 8)
    write_image(folder / "photo.png", rgb)
    expected["photo.png"] = rgb
    Image.fromarray(smooth_image(rng, (32, 32), 8)).save(folder / "snap.jpg", quality=85)
    expected["snap.jpg"] = np.asarray(Image.open(folder / "snap.jpg"))
    shutil.copy(get_testdata_file("emri_small.dcm"), folder / "mr.dcm")
    import pydicom

    for k, frame in enumerate(pydicom.dcmread(folder / "mr.dcm").pixel_array):
        expected[f"mr.dcm#{k}"] = frame
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for k in range(3):
            a = smooth_image(rng, (20, 22), 12)
            png = io.BytesIO()
            Image.fromarray(a).save(png, format="PNG")
            info = tarfile.TarInfo(f"m{k}.png")
            info.size = len(png.getvalue())
            tar.addfile(info, io.BytesIO(png.getvalue()))
            expected[f"shard.tar/m{k}.png"] = a
    (folder / "shard.tar").write_bytes(buf.getvalue())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return expected


def test_encode_local_folder_then_rerun(cluster, tmp_path):
    expected = make_sources(tmp_path / "src")
    dst = str(tmp_path / "archive")
    summary = run_encode(str(tmp_path / "src"), dst, EncodeSettings(), JobOptions(gpus_per_worker=0, batch_size=3),
                         log=lambda *_: None)
    assert summary["encoded"] == len(expected) and summary["failed"] == 1
    assert summary["failures"][0]["image_id"] == "broken.png" and summary["failures"][0]["stage"] == "decode"
    archive = Archive.open(dst)
    assert sorted(archive.ids()) == sorted(expected)
    for image_id, array in expected.items():
        out = archive.get(image_id)
        assert out.dtype == array.dtype and np.array_equal(out, array), image_id
    (run_file,) = (tmp_path / "archive" / "runs").glob("*.json")
    stored = json.loads(run_file.read_text())
    for key in ("encoded", "skipped", "failed", "bytes_in", "bytes_out", "seconds"):
        assert key in stored
    assert stored["bytes_out"] < stored["bytes_in"]
    again = run_encode(str(tmp_path / "src"), dst, EncodeSettings(), JobOptions(gpus_per_worker=0),
                       log=lambda *_: None)
    assert again["encoded"] == 0 and again["skipped"] == len(os.listdir(tmp_path / "src")) - 1
    assert len(Archive.open(dst)) == len(expected)


def test_gpu_actors_pin_their_own_devices_and_load_once(cluster, tmp_path):
    import ray

    workers, gpus, cpus = plan_workers(ray.cluster_resources(), JobOptions())
    assert (workers, gpus) == (2, 1.0)
    actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(EncodeWorker)
    actors = [actor.remote(str(tmp_path / "a"), "run", EncodeSettings()) for _ in range(workers)]
    infos = ray.get([a.info.remote() for a in actors])
    assert sorted(i["cuda_visible_devices"] for i in infos) == ["0", "1"]
    assert [i["loads"] for i in infos] == [1, 1] and len({i["pid"] for i in infos}) == 2
    for a in actors:
        ray.kill(a)


def test_unsatisfiable_gpu_request_fails_fast():
    with pytest.raises(JobError, match="asked for 1 GPU per worker but the cluster has 0 GPUs"):
        plan_workers({"CPU": 2.0}, JobOptions(gpus_per_worker=1))
    with pytest.raises(JobError, match="need 3 GPUs"):
        plan_workers({"CPU": 8.0, "GPU": 2.0}, JobOptions(workers=3, gpus_per_worker=1))
    assert plan_workers({"CPU": 2.0, "GPU": 2.0}, JobOptions(gpus_per_worker=0.5)) == (2, 0.5, 1.0)


def test_s3_to_s3_two_hundred_mixed_images(cluster, tmp_path):
    fs = fsspec.filesystem("s3")
    rng = np.random.default_rng(5)
    expected = {}
    mixed = make_sources(tmp_path / "mixed")  # TIFF, JPEG, RGB, DICOM frames, a tar shard, a broken file
    for path in (tmp_path / "mixed").iterdir():
        fs.pipe(f"src/batch/mixed/{path.name}", path.read_bytes())
    expected |= {f"mixed/{k}": v for k, v in mixed.items()}
    for k in range(200):
        bits = 8 if k % 2 else 16
        a = smooth_image(rng, (24 + k % 7, 20 + k % 5), bits)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        fs.pipe(f"src/batch/img{k:03d}.png", buf.getvalue())
        expected[f"img{k:03d}.png"] = a
    summary = run_encode("s3://src/batch", "s3://archive/a1", EncodeSettings(), JobOptions(gpus_per_worker=0,
                                                                                             batch_size=32),
                         log=lambda *_: None)
    assert (summary["encoded"], summary["failed"]) == (len(expected), 1)
    assert summary["failures"][0]["image_id"] == "mixed/broken.png"
    archive = Archive.open("s3://archive/a1")
    assert sorted(archive.ids()) == sorted(expected)
    for image_id in list(expected)[::7] + [k for k in expected if k.startswith("mixed/")]:
        assert np.array_equal(archive.get(image_id), expected[image_id]), image_id
    files = fs.glob("archive/a1/data/*.parquet")
    rows = sum(pq.ParquetFile(fs.open(f)).metadata.num_rows for f in files)
    assert rows == len(expected)
    records = [json.loads(fs.cat(p)) for p in fs.glob("archive/a1/_commits/*.json")]
    assert sum(r["stats"]["images"] for r in records) == len(expected)


def test_decode_job_writes_every_image_back(cluster, tmp_path):
    from lowrank_batch.images import read_image
    from lowrank_batch.pipeline.decode_job import output_name, run_decode

    expected = make_sources(tmp_path / "src")
    run_encode(str(tmp_path / "src"), str(tmp_path / "archive"), EncodeSettings(), JobOptions(gpus_per_worker=0),
               log=lambda *_: None)
    summary = run_decode(str(tmp_path / "archive"), str(tmp_path / "out"), fmt="npy", chunk=5)
    assert (summary["decoded"], summary["failed"]) == (len(expected), 0)
    for image_id, array in expected.items():
        out = read_image(tmp_path / "out" / output_name(image_id, "npy"))
        assert out.dtype == array.dtype and np.array_equal(out, array)


def test_gpu_workers_get_images_decoded_by_cpu_tasks(cluster, tmp_path):
    expected = make_sources(tmp_path / "src")
    summary = run_encode(str(tmp_path / "src"), str(tmp_path / "archive"), EncodeSettings(),
                         JobOptions(gpus_per_worker=1, batch_size=2), log=lambda *_: None)
    assert (summary["encoded"], summary["failed"]) == (len(expected), 1)
    import torch

    if not torch.cuda.is_available():  # Ray's fake GPUs: the CPU fallback is on record, not silent
        assert any("ran on the CPU" in n for n in summary["notes"]), summary["notes"]
    archive = Archive.open(str(tmp_path / "archive"))
    for image_id, array in expected.items():
        assert np.array_equal(archive.get(image_id), array), image_id
