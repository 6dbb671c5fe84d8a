"""jobs/encode.py runs unchanged under `ray job submit` on a Ray head started for the test."""

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lowrank_batch.archive import Archive
from lowrank_batch.images import write_image

from .conftest import smooth_image

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    ray_bin = shutil.which("ray", path=sysconfig.get_path("scripts"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled",
               PATH=sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", ""))
    port, dash = _free_port(), _free_port()
    temp = Path("/tmp") / f"rayt{port}"  # short: Ray's socket paths must stay under 108 bytes
    # every port explicit and free: another Ray (the in-process one of other tests) may be up
    start = [ray_bin, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
             "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats",
             f"--temp-dir={temp}", f"--dashboard-agent-listen-port={_free_port()}",
             f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
             f"--runtime-env-agent-port={_free_port()}", f"--node-manager-port={_free_port()}",
             f"--object-manager-port={_free_port()}", f"--ray-client-server-port={_free_port()}"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_job_server(ray_bin, address, env)
        yield ray_bin, address, env
    finally:
        _stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_head(temp: Path) -> None:
    """Stop this head's processes by PID. `ray stop` would kill every Ray process on the machine,
    the session's in-process cluster included, and the test process with it (its GCS gone)."""
    import psutil

    mine = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp) in part for part in (p.info["cmdline"] or [])):
                mine.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in mine:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _wait_for_job_server(ray_bin: str, address: str, env: dict, timeout: float = 90) -> None:
    """`ray start` returns before the dashboard's job server answers: wait for it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run([ray_bin, "job", "list", "--address", address], env=env, capture_output=True,
                               text=True, timeout=60)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray job server at {address} did not come up: {probe.stderr[-2000:]}")
        time.sleep(1)


def test_encode_job_via_ray_job_submit(ray_head, tmp_path):
    """`ray job submit -- lowrank-batch encode SRC DST`: the console script joins the cluster the
    job runs on (RAY_ADDRESS), no --address; then jobs/encode.py from a --working-dir rerun."""
    ray_bin, address, env = ray_head
    rng = np.random.default_rng(9)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    images = {f"s{k}.png": smooth_image(rng, (40, 30 + k), 12) for k in range(6)}
    for name, a in images.items():
        write_image(src / name, a)
    cmd = [ray_bin, "job", "submit", "--address", address, "--",
           "lowrank-batch", "encode", str(src), str(dst), "--batch-size", "2"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert "encoded 6, skipped 0, failed 0" in result.stdout
    archive = Archive.open(str(dst))
    for name, a in images.items():
        assert np.array_equal(archive.get(name), a)
    cmd = [ray_bin, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           sys.executable, "jobs/encode.py", str(src), str(dst)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert "encoded 0, skipped 6, failed 0" in result.stdout
