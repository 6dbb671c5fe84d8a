"""Nightly reruns: only what changed, gone sources, failures on record, crash and resume."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.cli import main
from lowrank_batch.images import write_image
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings

from .conftest import smooth_image

QUIET = {"log": lambda *_: None}


def write_set(folder, names, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in names:
        a = smooth_image(rng, (24, 28), 12)
        write_image(folder / name, a)
        images[name] = a
    return images


def test_reruns_encode_only_new_and_changed_and_report_gone(cluster, tmp_path):
    src, dst = tmp_path / "src", str(tmp_path / "dst")
    images = write_set(src, [f"i{k:02d}.png" for k in range(30)], 1)
    opts = JobOptions(gpus_per_worker=0, batch_size=4)
    assert run_encode(str(src), dst, EncodeSettings(), opts, **QUIET)["encoded"] == 30
    second = run_encode(str(src), dst, EncodeSettings(), opts, **QUIET)
    assert (second["encoded"], second["skipped"]) == (0, 30)
    time.sleep(1.1)  # local files: the etag is mtime + size
    old = dict(images)
    images |= write_set(src, [f"i{k:02d}.png" for k in range(5)], 2)  # changed
    images |= write_set(src, [f"new{k}.png" for k in range(7)], 3)  # added
    third = run_encode(str(src), dst, EncodeSettings(), opts, **QUIET)
    assert (third["encoded"], third["skipped"]) == (12, 25)
    archive = Archive.open(dst)
    assert len(archive) == 37
    for name, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), a), name  # changed ones: the new version
    assert len(archive.versions("i00.png")) == 2 and len(archive.versions("i20.png")) == 1
    assert np.array_equal(ArchiveDecoder(archive).get("i00.png", version=0), old["i00.png"])  # older version still there
    for k in range(4):
        (src / f"i{29 - k:02d}.png").unlink()
    fourth = run_encode(str(src), dst, EncodeSettings(), opts, **QUIET)
    assert (fourth["encoded"], fourth["gone"], len(Archive.open(dst))) == (0, 4, 37)  # reported, kept
    pruned = run_encode(str(src), dst, EncodeSettings(), JobOptions(gpus_per_worker=0, prune=True), **QUIET)
    assert pruned["pruned"] == 4 and len(Archive.open(dst)) == 33


def test_failures_are_on_record_until_fixed_and_exit_codes(cluster, tmp_path, capsys):
    src, dst = tmp_path / "src", str(tmp_path / "dst")
    write_set(src, ["ok1.png", "ok2.png"], 4)
    (src / "bad.png").write_bytes(b"garbage")
    assert main(["encode", str(src), dst, "--gpus-per-worker", "0"]) == 1
    assert "failed bad.png [decode]" in capsys.readouterr().out
    (failure,) = Archive.open(dst).failures()
    assert (failure["image_id"], failure["stage"], failure["error"]) == ("bad.png", "decode", "InvalidImageError")
    assert failure["run_id"] and failure["time"] and failure["source_uri"].endswith("bad.png")
    assert main(["failures", dst]) == 0
    assert "1 open failures" in capsys.readouterr().out
    import duckdb

    table = duckdb.sql(f"select image_id, stage, error, run_id from read_parquet('{dst}/failures/*.parquet')")
    assert table.fetchall() == [("bad.png", "decode", "InvalidImageError", failure["run_id"])]
    assert main(["encode", str(src), dst, "--gpus-per-worker", "0"]) == 1  # fails again tonight:
    (again,) = Archive.open(dst).failures()  # still one open failure, the latest
    assert again["image_id"] == "bad.png" and again["run_id"] != failure["run_id"]
    time.sleep(1.1)
    write_set(src, ["bad.png"], 5)  # fixed: picked up by the next run
    assert main(["encode", str(src), dst, "--gpus-per-worker", "0"]) == 0
    assert Archive.open(dst).failures() == [] and len(Archive.open(dst)) == 3
    assert main(["runs", dst]) == 0
    assert "3 runs" in capsys.readouterr().out
    assert main(["encode", str(src), str(tmp_path / "other"), "--gpus-per-worker", "4"]) == 2  # job cannot run


@pytest.mark.parametrize("kill_at", ["after-listing", "mid-units"])
def test_driver_killed_then_rerun_archives_everything_once(cluster, tmp_path, kill_at):
    src, dst = tmp_path / "src", tmp_path / "dst"
    images = write_set(src, [f"k{k:02d}.png" for k in range(40)], 6)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "lowrank_batch.cli", "encode", str(src), str(dst), "--batch-size", "2",
           "--workers", "1", "--gpus-per-worker", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    if kill_at == "after-listing":  # the run printed its listing; Ray is starting, nothing committed
        assert "units to encode" in proc.stdout.readline()
    else:  # at the first commit: the 20 units are small, so the kill must come quickly
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (dst.exists() and any((dst / "_commits").glob("*.json"))):
            time.sleep(0.01)
    _kill_session(proc)  # the driver and the Ray it started: the whole run crashes at once
    committed = len(list((dst / "_commits").glob("*.json"))) if (dst / "_commits").exists() else 0
    assert (committed == 0) if kill_at == "after-listing" else (1 <= committed < 20), "kill landed elsewhere"
    summary = run_encode(str(src), str(dst), EncodeSettings(),
                         JobOptions(gpus_per_worker=0, batch_size=2, orphan_age_seconds=0), **QUIET)
    assert summary["encoded"] + summary["skipped"] == 40 and summary["encoded"] > 0  # the kill cut the run short
    archive = Archive.open(str(dst))
    assert sorted(archive.ids()) == sorted(images)
    rows = list(archive.rows(["source_uri"]))
    assert len(rows) == len({r["image_id"] for r in rows}) == 40  # exactly once
    for name, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), a)
    assert {f"data/{p.name}" for p in (dst / "data").glob("*.parquet")} == archive.committed_files  # no orphans


def _kill_session(proc, timeout=60.0):
    """SIGKILL every live process of proc's session (the driver's own, start_new_session), until
    none is left. Ray's processes die with their parent only asynchronously, and its reaper
    leaves the driver's process group: one that outlived the kill could commit a unit after the
    rerun's orphan sweep (age 0 here) had removed its data file."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while alive := _live_session_members(proc.pid):
        assert time.monotonic() < deadline, f"processes {alive} of the killed run outlived SIGKILL"
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _live_session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, session
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] not in "ZX":  # a zombie writes nothing
            members.append(int(entry))
    return members


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def test_worker_killed_mid_unit_is_restarted_and_its_unit_retried(cluster, tmp_path):
    import threading

    import psutil

    src, dst = tmp_path / "src", tmp_path / "dst"
    images = write_set(src, [f"w{k:02d}.png" for k in range(72)], 7)
    out = {}

    def run():
        out["summary"] = run_encode(str(src), str(dst), EncodeSettings(),
                                    JobOptions(workers=2, gpus_per_worker=0, batch_size=2), **QUIET)

    thread = threading.Thread(target=run)
    thread.start()
    killed, workers = None, []
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        if not workers:  # actors start before any commit; newest first (earlier tests' may linger)
            workers = sorted((p for p in psutil.process_iter(["cmdline", "create_time"])
                              if any("EncodeWorker" in part for part in (p.info["cmdline"] or []))),
                             key=lambda p: p.info["create_time"], reverse=True)
        elif dst.exists() and any((dst / "_commits").glob("*.json")):
            try:
                workers[0].kill()  # a unit is in flight on it: the run has 36 units
                killed = workers[0].pid
            except psutil.NoSuchProcess:
                workers = []
        time.sleep(0.01)
    thread.join(timeout=300)
    assert killed is not None, "no worker process was found to kill"
    summary = out["summary"]
    archive = Archive.open(str(dst))
    assert sorted(archive.ids()) == sorted(images)
    assert summary["failed"] == 0 and summary["encoded"] >= 72  # retried, not lost (a unit may commit twice)
    for name, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), a)
    rows = list(archive.rows(["source_uri"]))
    assert len(rows) == len({r["image_id"] for r in rows}) == 72


def test_two_concurrent_runs_keep_each_image_once(cluster, tmp_path):
    import threading

    src, dst = tmp_path / "src", tmp_path / "dst"
    images = write_set(src, [f"c{k:02d}.png" for k in range(20)], 8)
    summaries = []

    def run():
        summaries.append(run_encode(str(src), str(dst), EncodeSettings(),
                                    JobOptions(workers=1, gpus_per_worker=0, batch_size=3), **QUIET))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(summaries) == 2 and all(s["failed"] == 0 for s in summaries)
    archive = Archive.open(str(dst))
    assert sorted(archive.ids()) == sorted(images)
    rows = list(archive.rows(["source_uri"]))
    assert len(rows) == len({r["image_id"] for r in rows}) == 20
    for name, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), a)
    assert run_encode(str(src), str(dst), EncodeSettings(), JobOptions(gpus_per_worker=0), **QUIET)["encoded"] == 0


def test_a_crash_between_data_file_and_commit_leaves_an_orphan_the_next_run_cleans(cluster, tmp_path):
    import shutil

    src, dst = tmp_path / "src", tmp_path / "dst"
    images = write_set(src, [f"o{k}.png" for k in range(6)], 9)
    run_encode(str(src), str(dst), EncodeSettings(), JobOptions(gpus_per_worker=0, batch_size=3), **QUIET)
    data = next((dst / "data").glob("*.parquet"))
    orphan = dst / "data" / "u-crashed-000000000000.parquet"  # written, never committed
    shutil.copy(data, orphan)
    assert sorted(Archive.open(str(dst)).ids()) == sorted(images)  # invisible to readers
    young = run_encode(str(src), str(dst), EncodeSettings(), JobOptions(gpus_per_worker=0), **QUIET)
    assert young["orphans_removed"] == 0 and orphan.exists()  # may belong to a run still writing
    old = run_encode(str(src), str(dst), EncodeSettings(), JobOptions(gpus_per_worker=0, orphan_age_seconds=0),
                     **QUIET)
    assert old["orphans_removed"] == 1 and not orphan.exists() and data.exists()


def test_scheduler_moves_a_lost_workers_unit_and_fails_a_unit_that_kills_every_worker():
    """Unit test with a fake Ray: a unit whose worker died (a node lost) goes to another worker
    and is encoded; the dead worker is dropped. A unit that makes every worker it is given die
    is tried MAX_UNIT_ATTEMPTS times, then its files become 'worker' failures; the job goes on."""
    from types import SimpleNamespace

    import ray

    from lowrank_batch.pipeline.job import MAX_UNIT_ATTEMPTS, _schedule
    from lowrank_batch.pipeline.units import make_units
    from lowrank_batch.pipeline.worker import UnitResult
    from tests.test_units import files

    units = make_units(files(*[f"f{k}.png" for k in range(6)]), 2)

    class Ref:
        def __init__(self, value):
            self.value = value

    class Actor:
        def __init__(self, dead, poison=None):
            self.dead, self.poison, self.tries = dead, poison, 0
            self.encode_unit = SimpleNamespace(remote=self.encode)
            self.info = SimpleNamespace(remote=lambda: Ref(ray.exceptions.RayActorError() if self.dead else {}))

        def encode(self, unit, decoded):
            if self.dead or unit.unit_id == self.poison:
                self.tries += unit.unit_id == self.poison
                return Ref(ray.exceptions.RayActorError())
            return Ref(UnitResult(unit.unit_id, encoded=len(unit.files)))

    def get(ref, timeout=None):
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value

    fake = SimpleNamespace(wait=lambda refs, num_returns: ([refs[0]], refs[1:]), get=get, exceptions=ray.exceptions)
    results = list(_schedule(fake, [Actor(dead=False), Actor(dead=True)], units, read_ahead=None))
    assert sum(r.encoded for r in results) == 6 and not [f for r in results for f in r.failures]
    assert len(results) == len(units)

    poison = units[1].unit_id
    actor = Actor(dead=False, poison=poison)
    results = list(_schedule(fake, [actor], units, read_ahead=None))
    failed = [f for r in results for f in r.failures]
    assert actor.tries == MAX_UNIT_ATTEMPTS and len(results) == len(units)
    assert sorted(f["image_id"] for f in failed) == sorted(f.rel for f in units[1].files)
    assert all(f["stage"] == "worker" and f["error"] == "RayActorError" for f in failed)
    assert sum(r.encoded for r in results) == 6 - len(failed)


def test_nightly_on_s3_at_scale(cluster, tmp_path):
    """The issue's proof on SeaweedFS: 500 images twice -> 0; change 20, add 30 -> exactly 50;
    delete 10 -> 10 reported gone."""
    import io

    import fsspec
    from PIL import Image

    fs = fsspec.filesystem("s3")
    rng = np.random.default_rng(10)

    def put(name, seed_shift=0):
        a = (smooth_image(rng, (16, 18), 12) + seed_shift).astype(np.uint16)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return f"src/nightly/{name}", buf.getvalue()

    fs.pipe(dict(put(f"n{k:03d}.png") for k in range(500)))
    opts = JobOptions(gpus_per_worker=0, batch_size=50)
    src, dst = "s3://src/nightly", "s3://archive/nightly"
    assert run_encode(src, dst, EncodeSettings(), opts, **QUIET)["encoded"] == 500
    assert run_encode(src, dst, EncodeSettings(), opts, **QUIET)["encoded"] == 0
    fs.pipe(dict(put(f"n{k:03d}.png", 1) for k in range(20)))  # new content: new ETag
    fs.pipe(dict(put(f"added{k:02d}.png") for k in range(30)))
    third = run_encode(src, dst, EncodeSettings(), opts, **QUIET)
    assert (third["encoded"], third["skipped"]) == (50, 480)
    fs.rm([f"src/nightly/n{k:03d}.png" for k in range(490, 500)])
    fourth = run_encode(src, dst, EncodeSettings(), opts, **QUIET)
    assert (fourth["encoded"], fourth["gone"]) == (0, 10)
    assert sorted(fourth["gone_ids"]) == [f"n{k:03d}.png" for k in range(490, 500)]
    assert len(Archive.open(dst)) == 530
