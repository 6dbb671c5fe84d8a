"""A damaged archive: bits flipped in a data file, one truncated, one deleted, a commit record
corrupted. verify names every affected image, the others still decode exactly, and
`verify --repair` + a rerun archive everything again from the sources, each image once."""

import json

import numpy as np
import pytest

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.cli import main
from lowrank_batch.errors import LowrankError
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings

from .test_nightly import QUIET, write_set


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def _units(dst):
    """commit record name -> (data file, image ids), in name order."""
    out = {}
    for record in sorted((dst / "_commits").glob("*.json")):
        r = json.loads(record.read_text())
        out[record.name] = (dst / r["file"], sorted(r["index"]))
    return out


def test_damage_is_named_contained_and_repaired_by_a_rerun(cluster, tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    images = write_set(src, [f"d{k:02d}.png" for k in range(12)], 21)
    opts = JobOptions(gpus_per_worker=0, batch_size=3)
    assert run_encode(str(src), str(dst), EncodeSettings(), opts, **QUIET)["encoded"] == 12
    units = list(_units(dst).items())
    assert len(units) == 4
    (_, (flipped, flipped_ids)), (_, (truncated, truncated_ids)), (_, (deleted, deleted_ids)), \
        (record_name, (_, hidden_ids)) = units

    raw = bytearray(flipped.read_bytes())
    for k in range(40, len(raw) // 2, 97):  # bits flipped all through the column data
        raw[k] ^= 0x10
    flipped.write_bytes(bytes(raw))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    deleted.unlink()
    (dst / "_commits" / record_name).write_text('{"file": "data/x.parq')  # cut mid-write

    archive = Archive.open(str(dst))  # one bad record never makes the whole archive unreadable
    assert archive.damaged_records == [record_name]
    assert archive.missing_files() == {f"data/{deleted.name}"}
    failing = set()
    for image_id in archive.ids():
        try:
            out = ArchiveDecoder(archive).get(image_id)
        except LowrankError as exc:
            failing.add(image_id)
            assert image_id in str(exc) or "checksum" in str(exc).lower() or "SHA-256" in str(exc)
            continue
        assert np.array_equal(out, images[image_id])  # everything that decodes is exact
    assert set(truncated_ids) | set(deleted_ids) <= failing
    assert failing <= set(flipped_ids) | set(truncated_ids) | set(deleted_ids)  # damage stays contained
    assert set(hidden_ids).isdisjoint(archive.ids())

    capsys.readouterr()
    assert main(["verify", str(dst)]) == 1
    report = capsys.readouterr().out
    for image_id in failing:
        assert f"FAILED {image_id}" in report
    for image_id in hidden_ids:  # named through the data file next to the damaged record
        assert image_id in report

    assert main(["verify", str(dst), "--repair"]) == 1
    summary = run_encode(str(src), str(dst), EncodeSettings(), opts, **QUIET)
    assert summary["encoded"] >= len(failing | set(hidden_ids))
    repaired = Archive.open(str(dst))
    assert sorted(repaired.ids()) == sorted(images)
    for image_id, a in images.items():
        assert np.array_equal(ArchiveDecoder(repaired).get(image_id), a)
    capsys.readouterr()
    main(["verify", str(dst)])
    assert "12 ok, 0 failed" in capsys.readouterr().out


def test_a_deleted_data_file_is_encoded_again_without_repair(cluster, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    images = write_set(src, [f"e{k:02d}.png" for k in range(6)], 22)
    opts = JobOptions(gpus_per_worker=0, batch_size=3)
    run_encode(str(src), str(dst), EncodeSettings(), opts, **QUIET)
    (data_file, lost), _ = list(_units(dst).values())
    data_file.unlink()
    summary = run_encode(str(src), str(dst), EncodeSettings(), opts, **QUIET)
    assert summary["encoded"] == len(lost) == 3 and summary["skipped"] == 3
    archive = Archive.open(str(dst))
    for image_id, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(image_id), a)
