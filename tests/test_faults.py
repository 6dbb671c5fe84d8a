"""Faults during a real job: the S3 server stops mid-run; the temp folder and DST fill up.

Each job runs as the CLI in a process of its own with its own local Ray, as a nightly would.
"""

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder

from .conftest import smooth_image
from .s3server import seaweedfs_server

ROOT = Path(__file__).resolve().parents[1]


def job_env(**extra) -> dict:
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", **extra)


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_s3_outage_mid_run_is_waited_out_and_every_image_archived_once(tmp_path):
    """SeaweedFS is stopped at the first commit for 10 s, then started on the same ports and
    data: the job retries, finishes with exit 0, and the archive holds each image once."""
    import s3fs

    rng = np.random.default_rng(21)
    images = {f"o{k:03d}.png": smooth_image(rng, (48, 40), 12) for k in range(120)}
    with seaweedfs_server(tmp_path / "s3", buckets=("src", "archive")) as server:
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.pipe({f"src/outage/{name}": png_bytes(a) for name, a in images.items()})
        cmd = [sys.executable, "-m", "lowrank_batch.cli", "encode", "s3://src/outage", "s3://archive/outage",
               "--batch-size", "2", "--gpus-per-worker", "0", "--storage-retry-seconds", "120"]
        # botocore's own retries (AWS_MAX_ATTEMPTS) can ride out part of an outage; off here, so
        # what carries the job through is the job's own deadline (--storage-retry-seconds)
        env = job_env(**server.env, AWS_MAX_ATTEMPTS="1")
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            committed = _wait_for_first_commits(fs, "archive/outage/_commits", proc)
            server.stop()
            down = time.monotonic()
            time.sleep(10)
            server.start()
            outage = time.monotonic() - down
            out, _ = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out[-3000:]
        assert 1 <= committed < 60, f"the outage came at {committed} of 60 units, not mid-run"
        assert outage >= 10
        assert "reads/writes were retried after transient storage errors" in out, out[-3000:]
        assert "encoded 120, skipped 0, failed 0" in out

        archive = Archive.open("s3://archive/outage")
        rows = list(archive.rows(["source_uri"]))
        assert len(rows) == len({r["image_id"] for r in rows}) == 120  # exactly once
        assert sorted(archive.ids()) == sorted(images) and archive.failures() == []
        for name, a in images.items():
            assert np.array_equal(ArchiveDecoder(archive).get(name), a), name
        fs.invalidate_cache()  # the wait above listed _commits early on
        records = [json.loads(fs.cat(p)) for p in fs.glob("archive/outage/_commits/*.json")]
        assert sum(r["rows"] for r in records) == 120 and len(records) == 60
        (run,) = [json.loads(fs.cat(p)) for p in fs.glob("archive/outage/runs/*.json")]
        assert run["storage_retries"] > 0 and run["encoded"] == 120
        print(f"outage at {committed}/60 units, {outage:.1f} s down, {run['storage_retries']} retries, "
              f"run {run['seconds']:.1f} s")


def _wait_for_first_commits(fs, prefix: str, proc, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            fs.invalidate_cache()
            found = fs.ls(prefix) if fs.exists(prefix) else []
        except FileNotFoundError:
            found = []
        if found:
            return len(found)
        time.sleep(0.02)
    raise AssertionError(f"no unit was committed (job exit {proc.poll()})")


def test_full_temp_folder_fails_units_clearly_and_a_rerun_completes(tmp_path):
    """TMPDIR (Ray's session files) and DST on one small tmpfs, filled at the first commit.
    Needs a mount namespace: `unshare --mount --map-root-user` (root or unprivileged userns)."""
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, ("this fault test mounts a small tmpfs in a mount namespace of its own and "
                                   f"needs `unshare --mount --map-root-user` to work: {probe.stderr.strip()}")
    rng = np.random.default_rng(22)
    src = tmp_path / "src"
    src.mkdir()
    for k in range(120):  # noise-like: ~22 KB each in the archive, so 1.4 MB holds about half
        a = np.clip(rng.normal(2000, 300, (128, 128)), 0, 4095).astype(np.uint16)
        Image.fromarray(a).save(src / f"d{k:03d}.png")
    # short: Ray's socket paths under TMPDIR must stay within AF_UNIX's 107 bytes
    mount, report = Path(tempfile.mkdtemp(prefix="lrb-", dir="/tmp")), tmp_path / "report.json"
    cmd = ["unshare", "--mount", "--map-root-user", sys.executable, "-m", "tests.full_disk_scenario",
           str(mount), str(src), str(report)]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        mount.rmdir()  # the tmpfs lived in the namespace only: here it is an empty folder
    assert p.returncode == 0 and report.exists(), f"scenario failed: {p.stdout[-2000:]}{p.stderr[-3000:]}"
    r = json.loads(report.read_text())
    first, after = r["first"], r["after_first"]
    ids = sorted(f"d{k:03d}.png" for k in range(120))

    # the first run: clear errors naming DST, exit 1 (images failed), nothing half-written left behind;
    # its run record is written where the freed space allows, else that is said too (exit 2)
    assert first["rc"] in (1, 2), first
    assert "No space left on device" in first["out"] and "could not be written to /tmp/lrb-" in first["out"]
    if first["rc"] == 1:
        assert len(after["files"]["runs"]) == 1, first
    else:
        assert "could not write the run record" in first["err"] and "No space left on device" in first["err"]
    assert 0 < len(after["ids"]) < 120, "the disk filled before or after the run, not during it"
    assert after["files"]["data"] == sorted(f.split("/")[1] for f in after["committed_files"])  # no partial files
    assert after["tmp_leftovers"] == []
    assert r["verify_first"]["rc"] == 0 and f"{len(after['ids'])} ok, 0 failed" in r["verify_first"]["out"]

    # space freed: the rerun encodes exactly what is missing, and every image decodes exactly
    second = r["second"]
    assert second["rc"] == 0, second
    assert f"encoded {120 - len(after['ids'])}, skipped {len(after['ids'])}, failed 0" in second["out"]
    assert r["after_second"]["ids"] == ids and r["mismatched"] == []
    assert r["verify_second"]["rc"] == 0 and "120 ok, 0 failed" in r["verify_second"]["out"]


def test_an_unreachable_source_is_one_clear_job_error_after_the_deadline(tmp_path, monkeypatch):
    """Nothing listens on the endpoint: the listing is retried for --storage-retry-seconds, then
    the job stops with an error naming SRC and the cause (exit 2 in the CLI), writing nothing."""
    import socket

    import s3fs

    from lowrank_batch.pipeline.job import JobError, JobOptions, run_encode
    from lowrank_batch.pipeline.worker import EncodeSettings

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    s3fs.S3FileSystem.clear_instance_cache()
    start = time.monotonic()
    try:
        with pytest.raises(JobError, match=r"cannot list s3://src/nightly: EndpointConnectionError"):
            run_encode("s3://src/nightly", str(tmp_path / "dst"), EncodeSettings(),
                       JobOptions(storage_retry_seconds=3), log=lambda *_: None)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert 3 <= time.monotonic() - start < 60  # it waited out the deadline, then gave up
    assert not (tmp_path / "dst").exists()
