"""Encode + compact + vacuum side by side on SeaweedFS, each killed at random points: afterwards
every image is there exactly once and decodes exactly, and every version still listed decodes.
Slow: about 60-90 s on 2 cores (process start-ups and codec loads dominate)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder

from .chaos_archive import expected, pixels

ROUNDS = 14
ROOT = Path(__file__).resolve().parent.parent


def start(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tests.chaos_archive", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_encode_compact_vacuum_killed_at_random_points_lose_and_duplicate_nothing(tmp_path):
    from .s3server import seaweedfs

    rng = random.Random(17)
    uri = "s3://archive/chaos"
    with seaweedfs(tmp_path / "s3", buckets=("archive",)):
        kills = 0
        for _ in range(5):
            encoder, maintainer = start("encode", uri, str(ROUNDS)), start("maintain", uri)
            # start-up takes ~2-3 s and a quiet machine encodes every round in ~5 s: kills land
            # in start-up, mid-commit or mid-maintenance
            time.sleep(rng.uniform(2.0, 6.0))
            for proc in (encoder, maintainer):
                kills += proc.poll() is None
                if proc is maintainer and proc.poll() is not None:  # it runs until killed
                    pytest.fail(f"the maintainer stopped by itself: {proc.communicate()[1][-2000:]}")
                kill(proc)
        assert kills >= 5, "the processes finished before any kill"
        for args in (("encode", uri, str(ROUNDS)), ("maintain", uri, "--once")):  # finish undisturbed
            proc = start(*args)
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
        archive = Archive.open(uri)
        want = expected(ROUNDS)
        assert archive.ids() == sorted(want)
        rows = list(archive.rows(["source_etag"]))
        assert len(rows) == len({r["image_id"] for r in rows}) == len(want)  # exactly once
        for image_id, version in want.items():
            assert np.array_equal(ArchiveDecoder(archive).get(image_id), pixels(image_id, version)), image_id
            listed = archive.versions(image_id)
            for v in range(len(listed)):  # whatever the retention has not expired yet still decodes
                got = ArchiveDecoder(archive).get(image_id, version=v)
                assert any(np.array_equal(got, pixels(image_id, k)) for k in (0, 1)), (image_id, v)
        live_files = {archive._index[i].file for i in archive.ids()}
        assert len(live_files) <= 4  # compaction merged the rounds' files (one per 16 rows)
        # files still there and named by no version: the young orphans of killed writers (kept an
        # hour: they might belong to a writer still at work) and files moved away < 2 s ago
        assert set(archive.committed_files) >= live_files
