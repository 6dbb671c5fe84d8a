"""Opening a checkpointed archive does no Python work per image: the checkpoint's rows stay
Arrow columns, lookups find the right rows for thousands of ids, bulk answers are exact.

Built fast by writing data files and commit records directly (as benchmarks/archive_scale.py
does): 24,000 images in 48 commits, 1,200 of them superseded, 300 removed, two commits after
the checkpoint. The expected state is the fold of every record into plain dicts."""

import datetime as dt
import json
import random

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from lowrank_batch.archive import Archive
from lowrank_batch.archive import checkpoint as ckpt
from lowrank_batch.archive.layout import plan_sources, write_tombstones
from lowrank_batch.archive.overlay import Overlay
from lowrank_batch.archive.reader import parse_record
from lowrank_batch.archive.schema import ROWS_PER_GROUP
from lowrank_batch.sources.files import SourceFile

from .test_checkpoint import Counting, full_fold

FILE_ROWS = 500


def write_unit(fs, root: str, name: str, ids: list[str], etag: str, when: dt.datetime) -> None:
    """A data file holding only image ids (enough for row lookups) and its commit record."""
    pq.write_table(pa.table({"image_id": ids}), f"{root}/data/{name}.parquet", row_group_size=ROWS_PER_GROUP)
    record = {"file": f"data/{name}.parquet", "unit_id": name, "run_id": "r", "rows": len(ids),
              "index": {i: [k // ROWS_PER_GROUP, k % ROWS_PER_GROUP] for k, i in enumerate(ids)},
              "sources": {i: [f"s3://src/{i}", etag, 7] for i in ids},
              "committed_at": when.isoformat(timespec="milliseconds"), "stats": {}, "failures": []}
    fs.pipe_file(f"{root}/_commits/{ckpt.record_name(name, when)}", json.dumps(record).encode())


def test_open_keeps_the_checkpoint_columnar_and_lookups_are_exact(tmp_path, monkeypatch):
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    fs.makedirs(f"{root}/data"), fs.makedirs(f"{root}/_commits")
    ids = [f"{k % 97:02d}/img{k:06d}.png" for k in range(24_000)]  # not in write order
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    for u, first in enumerate(range(0, len(ids), FILE_ROWS)):
        write_unit(fs, root, f"u{u:03d}", ids[first:first + FILE_ROWS], "e1", start + dt.timedelta(minutes=u))
    again = ids[::20]  # superseded by a later version
    write_unit(fs, root, "again", again, "e2", start + dt.timedelta(hours=3))
    write_tombstones(fs, root, "prune", ids[1::80])
    assert ckpt.checkpoint(fs, root, parse_record, force=True)
    write_unit(fs, root, "late", ids[2::400] + ["new.png"], "e3", dt.datetime.now(dt.timezone.utc))
    expected = full_fold(tmp_path)  # plain dicts, record by record

    counting = Counting(monkeypatch)
    made = []
    original_make = Overlay.__init__

    def counting_init(self, columns, make, *a, **kw):
        original_make(self, columns, lambda *args: made.append(1) or make(*args), *a, **kw)

    monkeypatch.setattr(Overlay, "__init__", counting_init)
    archive = Archive.open(str(tmp_path))
    listed = archive.ids()
    assert len(set(counting.paths)) <= 4, counting.paths  # the checkpoint and the late record
    # values were built for the late record's images only (their old and new versions), not per
    # image of the archive, and the changes since the checkpoint are that record's
    late = len(ids[2::400]) + 1
    assert len(made) <= 2 * late and len(archive.state.index._changed) == late
    assert len(archive.state.index.base) > 20_000
    assert listed == sorted(expected.index) and len(archive) == len(expected.index)

    sample = random.Random(7).sample(listed, 3000) + ["new.png", ids[2]]
    for image_id in sample:
        assert archive._index[image_id] == expected.index[image_id]
        assert archive.sources[image_id] == expected.sources[image_id]
        assert archive.versions(image_id) == [loc.committed_at for loc in expected.versions(image_id)]
    for image_id in ids[1:400:80]:  # removed
        assert image_id not in archive._index and image_id not in listed
    for image_id in sample[:20]:  # the location names the right row of the right file
        assert archive.row(image_id, ["image_id"])["image_id"] == image_id
    assert archive.by_file() == {f: sorted(i for i, loc in expected.index.items() if loc.file == f)
                                 for f in sorted({loc.file for loc in expected.index.values()})}
    # a rerun's plan: unchanged sources done, changed ones not, gone ones named
    listing = [SourceFile(f"s3://src/{i}", i, 7, expected.sources[i][1]) for i in listed[:-500]]
    listing[0] = SourceFile(listing[0].uri, listing[0].rel, 8, listing[0].etag)
    plan = plan_sources(archive, listing)
    assert plan.done == {f.rel for f in listing[1:]} and plan.gone == listed[-500:]
