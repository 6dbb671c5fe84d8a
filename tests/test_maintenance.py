"""compact and vacuum: fewer files, every live image still decodes exactly, superseded versions
readable until the retention, uncommitted files of a writer still at work left alone."""

import datetime as dt
import os
import time

import fsspec
import numpy as np
import pytest

from lowrank_batch.archive import Archive, UnitWriter

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.archive.maintenance import compact, parse_duration, vacuum
from lowrank_batch.archive.layout import write_tombstones
from lowrank_batch.cli import main

from .conftest import smooth_image
from .test_archive import rows_for


def build(codec, root, units=12, per_unit=3):
    """`units` small commits, 4 images changed later (2 versions), 2 pruned; returns id -> pixels
    of each version, oldest first."""
    rng = np.random.default_rng(11)
    fs, path = fsspec.core.url_to_fs(str(root))
    versions: dict[str, list[np.ndarray]] = {}
    for u in range(units):
        images = [(f"m{u:02d}-{k}.png", smooth_image(rng, (18, 20 + k), 12), 12) for k in range(per_unit)]
        UnitWriter(fs, path, f"u{u}", "r1").write(rows_for(codec, images, unit=f"u{u}"))
        for name, a, _ in images:
            versions[name] = [a]
    changed = [(f"m{u:02d}-0.png", smooth_image(rng, (18, 20), 12), 12) for u in range(4)]
    UnitWriter(fs, path, "u-changed", "r2").write(rows_for(codec, changed, run="r2", unit="u-changed"))
    for name, a, _ in changed:
        versions[name].append(a)
    gone = [f"m{units - 1:02d}-1.png", f"m{units - 1:02d}-2.png"]
    write_tombstones(fs, path, "r3", gone)
    for name in gone:
        del versions[name]
    return versions


def check(archive, versions):
    assert archive.ids() == sorted(versions)
    for name, vs in versions.items():
        assert np.array_equal(ArchiveDecoder(archive).get(name), vs[-1]), name
    rows = list(archive.rows(["source_uri"]))
    assert sorted(r["image_id"] for r in rows) == sorted(versions)  # each once


def test_compact_then_vacuum_leaves_a_handful_of_files_and_every_image_exact(codec, tmp_path, capsys):
    versions = build(codec, tmp_path)
    data = tmp_path / "data"
    assert len(list(data.glob("*.parquet"))) == 13
    orphan = data / "u-still-writing-000000000000.parquet"  # a writer at work: no commit yet
    orphan.write_bytes((next(data.glob("*.parquet"))).read_bytes())
    assert main(["compact", str(tmp_path), "--target-rows", "64"]) == 0
    assert "compacted 34 rows" in capsys.readouterr().out
    archive = Archive.open(str(tmp_path))
    check(archive, versions)
    assert len({archive._index[i].file for i in archive.ids()}) == 1
    assert np.array_equal(ArchiveDecoder(archive).get("m00-0.png", version=0), versions["m00-0.png"][0])  # within retention
    vacuum(str(tmp_path))  # default retention (7 days): nothing committed is deleted yet
    assert len(list(data.glob("*.parquet"))) == 15 and orphan.exists()
    assert np.array_equal(ArchiveDecoder.open(str(tmp_path)).get("m00-0.png", version=0), versions["m00-0.png"][0])
    blob = tmp_path / "weights" / "sha256" / ("ab" * 32)  # weights the archive carries: never vacuumed
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"weights")
    os.utime(blob, (time.time() - 7200,) * 2)
    assert main(["vacuum", str(tmp_path), "--retention", "0"]) == 0
    assert "expired 6 versions" in capsys.readouterr().out  # 4 superseded, 2 pruned
    assert orphan.exists()  # young: may belong to a run still writing
    remaining = sorted(p.name for p in data.glob("*.parquet"))
    assert len(remaining) == 2 and orphan.name in remaining  # the compacted file and the young orphan
    archive = Archive.open(str(tmp_path))
    check(archive, versions)
    assert len(archive.versions("m00-0.png")) == 1
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    assert vacuum(str(tmp_path), retention=dt.timedelta(0)).files_deleted == 1 and not orphan.exists()
    check(Archive.open(str(tmp_path)), versions)
    assert blob.read_bytes() == b"weights"


def test_compaction_never_undoes_a_newer_version_committed_meanwhile(codec, tmp_path, monkeypatch):
    """A run commits a new version of an image while compaction copies the old one: the copy
    moves the old version, the new one stays live."""
    from lowrank_batch.archive import maintenance
    from lowrank_batch.pipeline.decoding import ArchiveDecoder

    versions = build(codec, tmp_path, units=4)
    fs, path = fsspec.core.url_to_fs(str(tmp_path))
    newer = smooth_image(np.random.default_rng(99), (18, 21), 12)
    original = maintenance._read_rows

    def read_then_commit(fs_, root, state, ids):
        rows = original(fs_, root, state, ids)
        if "m01-1.png" in ids and versions["m01-1.png"][-1] is not newer:
            UnitWriter(fs, path, "u-night", "r9").write(rows_for(codec, [("m01-1.png", newer, 12)], run="r9"))
            versions["m01-1.png"].append(newer)
        return rows

    monkeypatch.setattr(maintenance, "_read_rows", read_then_commit)
    compact(str(tmp_path), target_rows=64)
    archive = Archive.open(str(tmp_path))
    check(archive, versions)
    assert len(versions["m01-1.png"]) == len(archive.versions("m01-1.png")) == 2  # the race happened
    assert np.array_equal(ArchiveDecoder(archive).get("m01-1.png", version=0), versions["m01-1.png"][0])


def test_retention_parsing_and_bad_input(tmp_path):
    assert parse_duration("7d") == dt.timedelta(days=7) and parse_duration("90") == dt.timedelta(seconds=90)
    with pytest.raises(ValueError, match="retention 'soon'"):
        parse_duration("soon")
    assert main(["vacuum", str(tmp_path / "nothing")]) == 2
