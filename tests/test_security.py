"""Security: servers the tests (and the demo) start listen on loopback only; no credential
appears in anything a job prints or writes."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import psutil
import pytest

from lowrank_batch.images.files import image_bytes

from .conftest import smooth_image
from .s3server import ACCESS_KEY, SECRET_KEY

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_every_server_listens_on_loopback_only(cluster):
    """Ray (GCS, raylet, agents, workers) and SeaweedFS, as the session's tests run them."""
    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "weed" in cmd and "mini" in cmd:
            ours.add(p.pid)
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert listening, "no servers found: the check would prove nothing"
    wide = [(c.laddr, psutil.Process(c.pid).name()) for c in listening if c.laddr.ip not in LOOPBACK]
    assert not wide, f"servers reachable from other hosts: {wide}"


def test_the_demo_s_ray_listens_on_loopback_only(tmp_path):
    """The README's first command starts a local Ray: sampled while it runs, every listening
    socket of its process tree is loopback. The Ray settings the tests use are removed from its
    environment, so what is checked is the product's own start_ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "lowrank_batch.cli", "demo", "--out", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = {root.pid} | {c.pid for c in root.children(recursive=True)}
            seen |= {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in tree}
        except psutil.Error:  # the tree changed while it was read
            pass
        time.sleep(0.2)
    out = proc.stdout.read()
    assert proc.returncode == 0 and "all checks passed" in out, out[-2000:]
    assert len(seen) >= 3, f"too few servers seen for the check to mean anything: {seen}"
    assert {ip for ip, _ in seen} <= LOOPBACK, f"servers reachable from other hosts: {seen}"


def test_no_credential_in_job_output_failures_or_summaries(cluster, tmp_path):
    """An S3-to-S3 job with failures: stdout/stderr, its Ray logs, failure records and run
    summaries never carry the access key or the secret."""
    fs = fsspec.filesystem("s3")
    rng = np.random.default_rng(3)
    for k in range(4):
        fs.pipe_file(f"src/sec/ok{k}.png", image_bytes(smooth_image(rng, (30, 40), 12), "png"))
    fs.pipe_file("src/sec/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    fs.pipe_file("src/sec/empty.dcm", b"")
    ray_tmp = tempfile.mkdtemp(prefix="rsec", dir="/tmp")
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    job = subprocess.run([sys.executable, "-m", "lowrank_batch.cli", "encode", "s3://src/sec", "s3://archive/sec",
                          "--gpus-per-worker", "0"], env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 1, job.stderr[-2000:]  # finished with failures on record
    listing = subprocess.run([sys.executable, "-m", "lowrank_batch.cli", "failures", "s3://archive/sec"],
                             env=env, capture_output=True, text=True, timeout=120)
    texts = {"job output": job.stdout + job.stderr, "failures command": listing.stdout + listing.stderr}
    fs.invalidate_cache()
    for path in fs.find("archive/sec"):
        if "/runs/" in path or "/failures/" in path or "/_commits/" in path:
            texts[path] = fs.cat_file(path).decode("latin-1")
    for path in Path(ray_tmp).rglob("*"):
        if path.is_file() and path.suffix in (".out", ".err", ".log", ".txt", ".json"):
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any("worker" in name for name in texts), "the job's Ray logs were not found"
    assert "broken.png" in texts["failures command"]
    for where, text in texts.items():
        for secret in (SECRET_KEY, ACCESS_KEY):
            assert secret not in text, f"credential found in {where}"
    subprocess.run(["rm", "-rf", ray_tmp])


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
