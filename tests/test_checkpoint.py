"""Checkpoints: opening reads a bounded number of objects whatever the history, gives the same
state as folding every commit record, and a stale checkpoint never hides a newer commit."""

import datetime as dt
import random

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from lowrank_batch.archive import Archive, UnitWriter

from lowrank_batch.archive import checkpoint as ckpt
from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.archive.reader import parse_record
from lowrank_batch.archive.layout import write_tombstones

from .conftest import smooth_image
from .test_archive import rows_for


@pytest.fixture(scope="module")
def encoded(codec):
    """One real encoded image, reused for every row (decode must work; encoding hundreds is slow)."""
    a = smooth_image(np.random.default_rng(3), (20, 24), 12)
    return a, rows_for(codec, [("x", a, 12)])[0]


def commit(root, unit, ids, template, etag="e1"):
    fs, path = fsspec.core.url_to_fs(str(root))
    rows = [dict(template, image_id=i, source_uri=f"file:///src/{i}", source_etag=etag, unit_id=unit) for i in ids]
    return UnitWriter(fs, path, unit, "r").write(rows)


class Counting:
    """Which objects an open reads (files opened or fetched whole), on the local file system."""

    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        original_open, original_cat = LocalFileSystem._open, LocalFileSystem.cat_file

        def _open(fs, path, *a, **kw):
            self.paths.append(path)
            return original_open(fs, path, *a, **kw)

        def cat_file(fs, path, *a, **kw):
            self.paths.append(path)
            return original_cat(fs, path, *a, **kw)

        monkeypatch.setattr(LocalFileSystem, "_open", _open)
        monkeypatch.setattr(LocalFileSystem, "cat_file", cat_file)


def history(root, template, units=240):
    """Hundreds of commits: superseded versions, a tombstone, failures."""
    for u in range(units):
        commit(root, f"u{u:03d}", [f"img{u % 150:03d}.png", f"only{u:03d}.png"], template, etag=f"e{u // 150}")
    fs, path = fsspec.core.url_to_fs(str(root))
    write_tombstones(fs, path, "prune-run", ["only000.png", "only001.png"])
    w = UnitWriter(fs, path, "ufail", "r")
    w.write([], failures=[{"image_id": "bad.png", "source_uri": "file:///src/bad.png", "stage": "decode",
                           "error": "InvalidImageError", "message": "not an image"}])


def full_fold(root) -> ckpt.State:
    fs, path = fsspec.core.url_to_fs(str(root))
    state = ckpt.State()
    names = ckpt.list_names(fs, f"{path}/_commits")
    records = [parse_record(n, fs.cat_file(f"{path}/_commits/{n}")) for n in names]
    for r in sorted(records, key=lambda r: r["committed_at"]):
        state.apply(r)
    return state


def same_state(archive: Archive, state: ckpt.State) -> None:
    assert archive.ids() == sorted(state.index)
    assert archive.sources == state.sources
    assert archive.failures() == sorted(state.open_failures(), key=lambda f: (f["time"], f["image_id"]))
    for image_id in state.index:
        assert archive.versions(image_id) == [loc.committed_at for loc in state.versions(image_id)]


def test_open_reads_a_bounded_number_of_objects_whatever_the_history(tmp_path, encoded, monkeypatch):
    pixels, template = encoded
    history(tmp_path, template)
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    assert ckpt.checkpoint(fs, root, parse_record) is not None
    for u in range(3):  # committed after the checkpoint: read on top of it
        commit(tmp_path, f"late{u}", [f"img00{u}.png", f"late{u}.png"], template, etag="late")
    expected = full_fold(tmp_path)
    counting = Counting(monkeypatch)
    archive = Archive.open(str(tmp_path))
    ids = archive.ids()
    assert len(set(counting.paths)) <= 10, counting.paths  # 1 checkpoint + 3 records
    assert len(ids) == 150 + 240 - 2 + 3 and "only000.png" not in ids and "late2.png" in ids
    same_state(archive, expected)
    assert archive.sources["img001.png"][1] == "late" and len(archive.versions("img001.png")) == 3
    assert [f["image_id"] for f in archive.failures()] == ["bad.png"]
    assert np.array_equal(ArchiveDecoder(archive).get("img001.png"), pixels)
    assert np.array_equal(ArchiveDecoder(archive).get("img001.png", version=0), pixels)


def test_a_stale_checkpoint_never_hides_newer_commits(tmp_path, encoded):
    _, template = encoded
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    commit(tmp_path, "u1", ["a.png"], template)
    slow = UnitWriter(fs, root, "slow", "r")  # named now, commits after two checkpoints
    ckpt.checkpoint(fs, root, parse_record, force=True)
    commit(tmp_path, "u2", ["b.png"], template)
    ckpt.checkpoint(fs, root, parse_record, force=True)
    slow.write([dict(template, image_id="c.png", source_uri="file:///src/c.png", unit_id="slow")])
    # a checkpoint whose listing began long ago (a slow writer of checkpoints) is the newest by name
    state, covered, _, _, _ = ckpt.load(fs, root, parse_record)
    ckpt.write_checkpoint(fs, root, state, dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1), covered)
    commit(tmp_path, "u3", ["a.png"], template, etag="e2")
    archive = Archive.open(str(tmp_path))
    assert archive.ids() == ["a.png", "b.png", "c.png"] and archive.sources["a.png"][1] == "e2"
    same_state(archive, full_fold(tmp_path))


def test_a_damaged_checkpoint_falls_back_to_an_older_one(tmp_path, encoded):
    _, template = encoded
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    commit(tmp_path, "u1", ["a.png"], template)
    ckpt.checkpoint(fs, root, parse_record, force=True)
    commit(tmp_path, "u2", ["b.png"], template)
    newest = ckpt.checkpoint(fs, root, parse_record, force=True)
    (tmp_path / "_checkpoints" / newest).write_bytes(b"PAR1 cut")
    assert Archive.open(str(tmp_path)).ids() == ["a.png", "b.png"]


def test_the_fold_does_not_depend_on_the_order_of_records():
    rng = random.Random(5)
    times = [f"2026-01-01T00:00:{s:02d}.000+00:00" for s in range(40)]
    records = []
    for k, t in enumerate(times):
        if k % 7 == 3:
            records.append({"committed_at": t, "index": {}, "removed": [f"i{rng.randrange(6)}"], "file": None})
        else:
            ids = {f"i{rng.randrange(6)}" for _ in range(2)}
            records.append({"committed_at": t, "file": f"data/f{k}.parquet", "index": {i: [0, n] for n, i in
                            enumerate(sorted(ids))}, "sources": {i: ["u", t, 1] for i in ids},
                            "failures": [{"image_id": f"i{k % 6}", "time": t}]})
    reference = ckpt.State()
    for r in records:
        reference.apply(r)
    for _ in range(20):
        shuffled = records[:]
        rng.shuffle(shuffled)
        cut = rng.randrange(len(shuffled))
        state = ckpt.State()
        for r in sorted(shuffled[:cut], key=lambda r: r["committed_at"]):  # a checkpoint ...
            state.apply(r)
        state = ckpt._state(ckpt._table(state), {"failures": list(state.failures.values()), "files": [],
                                                 "touched": {}, "damaged": []})
        for r in sorted(shuffled[cut:], key=lambda r: r["committed_at"]):  # ... and the records after it
            state.apply(r)
        assert state.index == reference.index and state.removed == reference.removed
        assert {i: state.versions(i) for i in "i0 i1 i2 i3 i4 i5".split()} == \
            {i: reference.versions(i) for i in "i0 i1 i2 i3 i4 i5".split()}
        assert state.open_failures() == reference.open_failures() or \
            sorted(map(str, state.open_failures())) == sorted(map(str, reference.open_failures()))


def test_serve_refreshes_from_the_log_after_its_checkpoint_not_a_listing_of_every_record(tmp_path, encoded,
                                                                                         monkeypatch):
    from lowrank_batch.serve.service import DicomwebService

    _, template = encoded
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    for u in range(12):
        commit(tmp_path, f"u{u}", [f"a{u}.png"], template)
    ckpt.checkpoint(fs, root, parse_record, force=True)
    service = DicomwebService(str(tmp_path), refresh_seconds=0, warm=False)
    first = service.archive
    listed: list[str] = []
    original = ckpt.list_names
    monkeypatch.setattr(ckpt, "list_names", lambda fs, folder, after="": listed.append(after) or
                        original(fs, folder, after))
    monkeypatch.setattr(fs.__class__, "glob", lambda *a, **k: pytest.fail("serve globbed every record"))
    service._maybe_reload()
    assert service.archive is first and listed == [first.log_position[0]]  # nothing new: kept
    ckpt.checkpoint(fs, root, parse_record, force=True)  # a new checkpoint alone changes nothing
    service._maybe_reload()
    assert service.archive is first
    monkeypatch.undo()  # the reload below reads data files
    commit(tmp_path, "late", ["late.png"], template)
    service._maybe_reload()
    assert service.archive is not first and "late.png" in service.archive.ids()
