"""The job on a three-node Ray cluster simulated on one machine (tests/multinode.py): a CPU:0
head (the driver's node) and two worker nodes, each with its own HOME and $LOWRANK_HOME.

Slow (about 6-8 min on 2 busy cores: three `ray start`s, three jobs, fresh decoders); run with
`pytest -m slow tests/test_multinode.py`. The tests share one cluster and run in file order:
the last one kills a node.
"""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from lowrank_batch.archive.reader import Archive
from lowrank_batch.images import write_image
from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.pipeline.archive_weights import resolve_weights
from lowrank_batch.weights.store import WeightStore

from .conftest import smooth_image
from .multinode import ROOT, start_cluster
from .test_archive_weights import install_custom_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("multinode"), workers=2, cpus_per_worker=2, head_cpus=0)
    try:
        yield cluster
    finally:
        cluster.stop()


def _images(folder, count, seed, shape=(64, 48)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = {f"m{k:02d}.png": smooth_image(rng, (shape[0], shape[1] + k), 12) for k in range(count)}
    for name, a in images.items():
        write_image(folder / name, a)
    return images


def _ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_weights_on_the_drivers_node_only_reach_every_worker_and_every_decoder(three_nodes, tmp_path):
    head, workers = three_nodes.head, three_nodes.nodes[1:]
    store = install_custom_weights(WeightStore(head.store), tmp_path)
    weights, _ = resolve_weights("custom", "ct-custom", store=store)
    images = _images(tmp_path / "src", 8, 21)
    dst = tmp_path / "archive"
    out = _ok(three_nodes.run_cli(["encode", str(tmp_path / "src"), str(dst), "--model", "custom",
                                   "--adapter", "ct-custom", "--address", three_nodes.gcs, "--workers", "2",
                                   "--gpus-per-worker", "0", "--batch-size", "2"], node=head))
    assert "encoded 8, skipped 0, failed 0" in out
    archive = Archive.open(str(dst))
    rows = list(archive.rows(["model_sha256", "adapter_sha256"]))
    assert sorted(r["image_id"] for r in rows) == sorted(images)
    assert {(r["model_sha256"], r["adapter_sha256"]) for r in rows} == {(weights.model_sha256, weights.adapter_sha256)}
    # the workers had nothing installed: they loaded the archive's copy by digest (cached, not named)
    fetched = [n for n in workers if (n.store / "blobs" / "sha256" / weights.model_sha256).exists()]
    assert fetched, "no worker node loaded the model from the archive"
    for node in workers:
        refs = node.store / "refs" / "models.json"
        assert not refs.exists() or "custom" not in refs.read_text()
    # a machine with an empty store: verify, decode each image by id, the report, the decode job
    fresh = tmp_path / "fresh"
    ids = sum([["--id", i] for i in sorted(images)], [])
    script = ("import sys; from lowrank_batch.cli import main; args = sys.argv[1:]; "
              "rc = main(['verify', args[0]]) or main(['decode', args[0], *args[3:], '--out', args[1], "
              "'--format', 'npy']) or main(['report', args[0], '--out', args[2], '--sample', '2']); sys.exit(rc)")
    env = three_nodes.env(None, home=fresh)
    result = subprocess.run([sys.executable, "-c", script, str(dst), str(tmp_path / "out"), str(tmp_path / "report"),
                             *ids], env=env, capture_output=True, text=True, timeout=900)
    assert "8 ok, 0 failed" in _ok(result)
    for name, a in images.items():
        assert np.array_equal(np.load(tmp_path / "out" / f"{name}.npy"), a), name
    assert json.loads((tmp_path / "report" / "report.json").read_text())
    job = subprocess.run([sys.executable, "jobs/decode.py", str(dst), str(tmp_path / "job-out"), "--format", "npy",
                          "--address", three_nodes.gcs], env=env, capture_output=True, text=True, timeout=900,
                         cwd=str(ROOT))
    assert "decoded 8, failed 0" in _ok(job)
    assert not (fresh / "store" / "refs" / "models.json").exists()  # nothing was installed by name


def test_ray_job_submit_runs_the_console_script_without_an_address(three_nodes, tmp_path):
    images = _images(tmp_path / "src", 6, 22)
    dst = tmp_path / "archive"
    cmd = ["ray", "job", "submit", "--address", three_nodes.dashboard, "--",
           "lowrank-batch", "encode", str(tmp_path / "src"), str(dst), "--gpus-per-worker", "0", "--batch-size", "2"]
    env = three_nodes.env(three_nodes.head)
    deadline = time.monotonic() + 120
    while subprocess.run(["ray", "job", "list", "--address", three_nodes.dashboard], env=env,
                         capture_output=True, timeout=120).returncode != 0:  # the job server starts late
        assert time.monotonic() < deadline, "the Ray job server did not come up"
        time.sleep(2)
    out = _ok(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900))
    assert "encoded 6, skipped 0, failed 0" in out
    archive = Archive.open(str(dst))
    for name, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), a)


def test_a_worker_node_dying_mid_run_costs_time_not_images(three_nodes, tmp_path):
    images = _images(tmp_path / "src", 24, 23)
    dst = tmp_path / "archive"
    cmd = [sys.executable, "-m", "lowrank_batch.cli", "encode", str(tmp_path / "src"), str(dst), "--address",
           three_nodes.gcs, "--workers", "2", "--gpus-per-worker", "0", "--batch-size", "2"]
    driver = subprocess.Popen(cmd, env=three_nodes.env(three_nodes.head), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    output = {}
    reader = threading.Thread(target=lambda: output.update(zip(("out", "err"), driver.communicate(timeout=900))))
    reader.start()
    victim = None
    deadline = time.monotonic() + 600
    while victim is None and driver.poll() is None and time.monotonic() < deadline:
        committed = list((dst / "_commits").glob("*.json")) if (dst / "_commits").exists() else []
        busy = [n for n in three_nodes.nodes[1:] if any("EncodeWorker" in _cmdline(p) for p in n.processes())]
        if committed and busy:  # mid-run: a unit committed, 11 to go, an actor on this node
            victim = busy[0]
            victim.kill()
        time.sleep(0.2)
    reader.join(timeout=900)
    assert victim is not None, "the job ended before a worker node could be killed"
    assert driver.returncode == 0, f"exit {driver.returncode}\n{output.get('out', '')[-4000:]}\n{output.get('err', '')[-4000:]}"
    assert "failed 0" in output["out"]
    archive = Archive.open(str(dst))
    assert sorted(archive.ids()) == sorted(images)  # each image archived, and listed once
    for name, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), a), name


def _cmdline(p) -> str:
    try:
        return " ".join(p.cmdline())
    except Exception:  # gone meanwhile
        return ""
