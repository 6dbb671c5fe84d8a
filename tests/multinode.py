"""A multi-node Ray cluster on one machine, for tests and benchmarks (GUIDE § 3).

A head and N worker nodes, each a separate `ray start --block` process on 127.0.0.1 with its
own HOME and $LOWRANK_HOME (separate machines share no disk), every port explicit and free.
Stopped by PID (never `ray stop`, which would stop every Ray on the machine). A node "dies"
by SIGKILL of its raylet and every other process it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
# `ray start` for a worker node on the head's host. Ray refuses a second raylet on one host unless
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, and with 1 it swaps "127.0.0.1" for the host's network
# address and binds every interface. Keep 1 for the refusal and 127.0.0.1 as given, so the node
# binds and advertises loopback only, like the head (as Ray's own ray.cluster_utils nodes do).
JOIN_ON_LOOPBACK = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
                    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    home: Path
    store: Path  # its $LOWRANK_HOME
    process: subprocess.Popen
    log: Path

    def processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """The machine is gone: its raylet and every process on it die at once."""
        procs = self.processes()
        for p in sorted(procs, key=lambda p: "raylet" not in " ".join(_cmdline(p))):  # the raylet first
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=15)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@dataclass
class Cluster:
    root: Path
    gcs: str  # host:port, for --address and ray.init
    dashboard: str  # http://host:port, for `ray job submit`
    temp: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def env(self, node: Node | None = None, **extra) -> dict:
        """The environment of a process on `node` (a driver, a decoder), or of a fresh machine
        (node None: its own empty HOME and $LOWRANK_HOME)."""
        if node is None:
            home = Path(extra.pop("home", self.root / "elsewhere"))
            home.mkdir(parents=True, exist_ok=True)
            store = home / "store"
        else:
            home, store = node.home, node.store
        return node_env(home, store, **extra)

    def run_cli(self, args: list[str], node: Node | None = None, timeout: float = 600, **extra):
        return subprocess.run([sys.executable, "-m", "lowrank_batch.cli", *args], env=self.env(node, **extra),
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        procs = [p for node in reversed(self.nodes) for p in node.processes()]
        procs += [p for p in psutil.process_iter() if str(self.temp) in " ".join(_cmdline(p))]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        shutil.rmtree(self.temp, ignore_errors=True)


def node_env(home: Path, store: Path, **extra) -> dict:
    scripts = sysconfig.get_path("scripts")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "LOWRANK_"))}
    env.update(HOME=str(home), LOWRANK_HOME=str(store), RAY_USAGE_STATS_ENABLED="0",
               # 0: Ray binds and advertises 127.0.0.1 only (drivers, the head; worker nodes: see
               # JOIN_ON_LOOPBACK)
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", AWS_EC2_METADATA_DISABLED="true",
               PATH=scripts + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _ports(*names: str) -> list[str]:
    return [f"--{n}={free_port()}" for n in names]


def start_cluster(root: Path, workers: int = 2, cpus_per_worker: int = 1, head_cpus: int = 0,
                  timeout: float = 180) -> Cluster:
    """Start a head (CPU `head_cpus`: 0 as in cluster.yaml, the driver's node) and `workers`
    worker nodes; returns once every node has joined."""
    ray_bin = shutil.which("ray", path=sysconfig.get_path("scripts"))
    port, dash = free_port(), free_port()
    temp = Path("/tmp") / f"raymn{port}"  # short: Ray's socket paths must stay under 108 bytes
    cluster = Cluster(root, f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp)
    agent = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port"]
    try:
        head = [ray_bin, "start", "--block", "--head", f"--port={port}", f"--dashboard-port={dash}",
                "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--num-cpus={head_cpus}",
                "--num-gpus=0", f"--temp-dir={temp}", *_ports(*agent, "ray-client-server-port")]
        cluster.nodes.append(_start_node(root, "head", head))
        _wait_for_nodes(cluster, 1, timeout)
        for k in range(workers):  # one at a time: on 2 busy cores a raylet may miss its startup deadline
            cmd = [sys.executable, "-c", JOIN_ON_LOOPBACK, "start", "--block", f"--address={cluster.gcs}",
                   f"--num-cpus={cpus_per_worker}", "--num-gpus=0", *_ports(*agent)]
            cluster.nodes.append(_start_node(root, f"node{k + 1}", cmd, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1))
            _wait_for_nodes(cluster, k + 2, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_node(root: Path, name: str, cmd: list[str], **env) -> Node:
    home = root / name / "home"
    store = root / name / "store"
    home.mkdir(parents=True, exist_ok=True)
    log = root / f"{name}.log"
    cmd = [*cmd, "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, env=node_env(home, store, **env), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Node(name, home, store, process, log)


def _wait_for_nodes(cluster: Cluster, count: int, timeout: float) -> None:
    """Until `count` nodes are alive (asked from a separate process: this one may hold a Ray)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    deadline = time.monotonic() + timeout
    while True:
        for node in cluster.nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start for {node.name} exited: {node.log.read_text()[-3000:]}")
        result = subprocess.run([sys.executable, "-c", probe, cluster.gcs], env=cluster.env(cluster.head),
                                capture_output=True, text=True, timeout=120)
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} nodes did not come up: {result.stdout[-500:]} {result.stderr[-2000:]}")
        time.sleep(2)
