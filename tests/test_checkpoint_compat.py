"""An archive outlives the code: a checkpoint written by the first release's code (golden
fixture, tests/golden/make_archive_checkpoint.py) still opens, with the same state, and its
images still decode exactly, the superseded version included."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from lowrank_batch.archive import Archive
from lowrank_batch.archive import checkpoint as ckpt
from lowrank_batch.pipeline.decoding import ArchiveDecoder

GOLDEN = Path(__file__).parent / "golden" / "archive_checkpoint_v1"


def test_a_checkpoint_of_the_first_release_still_opens(tmp_path):
    root = tmp_path / "archive"
    shutil.copytree(GOLDEN, root)
    expected = json.loads((GOLDEN / "expected.json").read_text())
    pixels = np.load(GOLDEN / "pixels.npz")
    newest = ckpt.read_newest(*_fs(root))
    assert newest is not None and newest.name.endswith(".parquet")  # read, not skipped
    archive = Archive.open(str(root))
    assert archive.ids() == expected["ids"]
    assert {i: list(archive.sources[i]) for i in archive.ids()} == expected["sources"]
    assert {i: archive.versions(i) for i in archive.ids()} == expected["versions"]
    assert [f["image_id"] for f in archive.failures()] == expected["failures"]
    decoder = ArchiveDecoder(archive)
    for image_id in archive.ids():
        assert np.array_equal(decoder.get(image_id), pixels[f"{image_id}@{expected['live_etags'][image_id]}"])
    assert np.array_equal(decoder.get("a.png", version=0), pixels["a.png@e1"])  # superseded, still kept
    # an opened archive still travels to Ray tasks and spawned workers (the columnar index pickles)
    copy = pickle.loads(pickle.dumps(archive))
    assert copy.ids() == expected["ids"] and copy.versions("a.png") == expected["versions"]["a.png"]
    assert {i: list(copy.sources[i]) for i in copy.ids()} == expected["sources"]
    assert copy.row("c.png", ["image_id"])["image_id"] == "c.png"


def _fs(root: Path):
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(root))
    return fs, path
