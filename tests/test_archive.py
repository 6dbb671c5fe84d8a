"""The archive without Ray: commit protocol, index, random access, a real Parquet client."""


import duckdb
import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from lowrank_batch.archive import Archive, UnitWriter

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.archive.reader import ArchiveError
from lowrank_batch.archive.schema import SCHEMA

from .conftest import smooth_image


def rows_for(codec, images, run="r1", unit="u1"):
    rows = []
    for name, a, bits in images:
        enc = codec.encode(a, bits)
        latent, residual = enc.split()
        rows.append({"image_id": name, "source_uri": f"file:///src/{name}", "source_etag": "e1", "source_size": 5,
                     "shape": list(a.shape), "dtype": a.dtype.name, "bits_stored": bits, "mode": enc.mode,
                     "max_error": 0, "latent": latent, "residual": residual, "pixel_sha256": enc.pixel_sha256,
                     "model_sha256": enc.model_sha256, "adapter_sha256": None, "psnr": None,
                     "encoded_bytes": len(latent) + len(residual), "codec_version": "t", "metadata_json": "{}",
                     "run_id": run, "unit_id": unit})
    return rows


@pytest.fixture
def images():
    rng = np.random.default_rng(2)
    return [(f"im{k:02d}.png", smooth_image(rng, (30 + k, 41), 12), 12) for k in range(11)]


def test_round_trip_by_id_and_preview(codec, tmp_path, images):
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    UnitWriter(fs, root, "u1", "r1").write(rows_for(codec, images))
    archive = Archive.open(str(tmp_path))
    assert archive.ids() == [n for n, _, _ in images]
    for name, a, _ in images:
        assert np.array_equal(ArchiveDecoder(archive).get(name), a)
    assert ArchiveDecoder(archive).get("im04.png", preview=True).shape == images[4][1].shape
    with pytest.raises(ArchiveError, match="no image 'nope.png'"):
        ArchiveDecoder(archive).get("nope.png")


def test_uncommitted_files_are_invisible_and_later_commits_supersede(codec, tmp_path, images):
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    UnitWriter(fs, root, "u1", "r1").write(rows_for(codec, images[:3]))
    # a crashed writer: data file complete, no commit record
    (tmp_path / "data").mkdir(exist_ok=True)
    pq.write_table(pq.read_table(next((tmp_path / "data").glob("*.parquet"))), tmp_path / "data" / "orphan.parquet")
    changed = [(images[0][0], images[5][1], 12)]
    UnitWriter(fs, root, "u9", "r2").write(rows_for(codec, changed, run="r2", unit="u9"))
    archive = Archive.open(str(tmp_path))
    assert len(archive) == 3
    assert np.array_equal(ArchiveDecoder(archive).get(images[0][0]), images[5][1])  # the newer version


def test_duckdb_reads_one_row_per_image_with_the_documented_columns(codec, tmp_path, images):
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    UnitWriter(fs, root, "u1", "r1").write(rows_for(codec, images[:6]))
    UnitWriter(fs, root, "u2", "r1").write(rows_for(codec, images[6:]))
    con = duckdb.connect()
    result = con.sql(f"select * from read_parquet('{tmp_path}/data/*.parquet') order by image_id")
    assert result.columns == SCHEMA.names
    rows = result.fetchall()
    assert [r[0] for r in rows] == [n for n, _, _ in images]
    for col in ("image_id", "source_uri", "source_etag", "shape", "dtype", "bits_stored", "mode", "max_error",
                "latent", "residual", "pixel_sha256", "model_sha256", "adapter_sha256", "psnr", "encoded_bytes",
                "codec_version", "metadata_json"):
        assert col in result.columns


def test_a_corrupt_commit_record_hides_its_unit_only_and_is_reported(codec, tmp_path, images):
    fs, root = fsspec.core.url_to_fs(str(tmp_path))
    UnitWriter(fs, root, "u1", "r1").write(rows_for(codec, images[:2]))
    UnitWriter(fs, root, "u2", "r1").write(rows_for(codec, images[2:3], unit="u2"))
    record = sorted((tmp_path / "_commits").glob("*-u1-*.json"))[0]
    record.write_text(record.read_text()[:20])
    archive = Archive.open(str(tmp_path))
    assert archive.damaged_records == [record.name]
    (n2, a2, _), names = images[2], sorted(name for name, _, _ in images[:2])
    assert archive.ids() == [n2] and np.array_equal(ArchiveDecoder(archive).get(n2), a2)
    assert archive.damaged_record_ids() == {record.name: names}


def test_no_archive(tmp_path):
    with pytest.raises(ArchiveError, match="no archive"):
        Archive.open(str(tmp_path / "missing"))
