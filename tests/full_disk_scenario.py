"""The full-temp-folder fault, run inside its own mount namespace (see test_faults.py).

    unshare --mount --map-root-user python -m tests.full_disk_scenario MOUNT SRC REPORT.json

Mounts a 48 MiB tmpfs at MOUNT that holds both the temp folder (TMPDIR: Ray's session files)
and the archive DST. A first encode run fills it at its first commit; then the space is freed
and a second run is made. Everything on the tmpfs vanishes with the namespace, so what the test
checks is gathered here into REPORT.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

LEAVE_FREE = 1_400_000  # bytes left when the disk is filled: room for about half the run


def job(src: Path, dst: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lowrank_batch.cli", "encode", str(src), str(dst), "--batch-size", "4",
           "--gpus-per-worker", "0"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli(*args: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-m", "lowrank_batch.cli", *args], env=env, capture_output=True, text=True)
    return {"rc": p.returncode, "out": p.stdout[-4000:], "err": p.stderr[-4000:]}


def fill(mount: Path) -> Path:
    """One file that takes all the free space but LEAVE_FREE bytes."""
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(free - LEAVE_FREE, 1))
    return filler


def archive_state(dst: Path) -> dict:
    from lowrank_batch.archive import Archive

    names = {d: sorted(p.name for p in (dst / d).glob("*")) if (dst / d).exists() else []
             for d in ("data", "failures", "_commits", "runs")}
    return {"ids": sorted(Archive.open(str(dst)).ids()), "files": names,
            "committed_files": sorted(Archive.open(str(dst)).committed_files),
            "tmp_leftovers": sorted(str(p.relative_to(dst)) for p in dst.rglob("*.tmp-*"))}


def main(mount: Path, src: Path, report: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    (mount / "tmp").mkdir()
    dst = mount / "archive"
    env = dict(os.environ, TMPDIR=str(mount / "tmp"), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1")
    first = job(src, dst, env)
    deadline = time.monotonic() + 300
    while not (dst / "_commits").exists() or not any((dst / "_commits").glob("*.json")):
        if first.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the first run ended before its first commit: {first.communicate()}")
        time.sleep(0.01)
    filler = fill(mount)
    out1, err1 = first.communicate(timeout=600)
    result = {"first": {"rc": first.returncode, "out": out1[-6000:], "err": err1[-6000:]},
              "after_first": archive_state(dst), "verify_first": cli("verify", str(dst), env=env)}
    filler.unlink()
    result["second"] = cli("encode", str(src), str(dst), "--batch-size", "4", "--gpus-per-worker", "0", env=env)
    result["after_second"] = archive_state(dst)
    result["verify_second"] = cli("verify", str(dst), env=env)
    from lowrank_batch.archive import Archive
    from lowrank_batch.pipeline.decoding import ArchiveDecoder

    archive = Archive.open(str(dst))
    result["mismatched"] = [p.name for p in sorted(src.glob("*.png"))
                            if not np.array_equal(ArchiveDecoder(archive).get(p.name), np.asarray(Image.open(p)))]
    report.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
