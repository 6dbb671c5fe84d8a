"""The live rows as a table: to_arrow, to_pandas and DuckDB see exactly one row per live image,
never superseded, pruned or uncommitted rows; DICOM identity as real columns."""

import json

import duckdb
import fsspec
import pyarrow.parquet as pq

from lowrank_batch.archive import Archive, UnitWriter
from lowrank_batch.archive.schema import DICOM_COLUMNS, SCHEMA
from lowrank_batch.archive.table import dicom_columns

from .test_archive import rows_for
from .test_maintenance import build


def messy_archive(codec, root):
    """Superseded (4), pruned (2) and uncommitted rows, plus a file from before the DICOM columns."""
    versions = build(codec, root, units=5)
    data = root / "data"
    uncommitted = next(data.glob("*.parquet"))
    pq.write_table(pq.read_table(uncommitted), data / "u-crashed-000000000000.parquet")
    fs, path = fsspec.core.url_to_fs(str(root))
    meta = {"format": "DICOM", "Modality": "CT", "dicom_json": {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]}, "00080060": {"vr": "CS", "Value": ["CT"]}}}
    rows = rows_for(codec, [("old/ct.dcm", versions["m00-1.png"][0], 12)], unit="u-old")
    rows[0]["metadata_json"] = json.dumps(meta)
    record = UnitWriter(fs, path, "u-old", "r0").write(rows)
    old = root / record["file"]  # as an archive written before the DICOM columns: without them
    table = pq.read_table(old)
    pq.write_table(table.drop_columns(list(DICOM_COLUMNS)), old, row_group_size=4)
    versions["old/ct.dcm"] = [versions["m00-1.png"][0]]
    return versions


def test_to_arrow_pandas_and_duckdb_return_exactly_the_live_rows(codec, tmp_path):
    versions = messy_archive(codec, tmp_path)
    archive = Archive.open(str(tmp_path))
    raw = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/data/*.parquet', union_by_name=true)")
    assert raw.fetchall()[0][0] > len(versions)  # a plain reader sees superseded and uncommitted rows
    table = archive.to_arrow()
    assert table.column_names == SCHEMA.names
    assert table.column("image_id").to_pylist() == sorted(versions)
    runs = dict(zip(table.column("image_id").to_pylist(), table.column("run_id").to_pylist()))
    changed = {f"m{u:02d}-0.png" for u in range(4)}  # the newer version, never the superseded one
    assert all(run == ("r2" if image_id in changed else "r1") for image_id, run in runs.items())
    ct = [r for r in table.to_pylist() if r["image_id"] == "old/ct.dcm"][0]
    assert (ct["modality"], ct["study_instance_uid"], ct["sop_instance_uid"]) == ("CT", "1.2.3", "1.2.3.4.5")
    frame = archive.to_pandas(["psnr", "modality"])
    assert list(frame.columns) == ["image_id", "psnr", "modality"] and len(frame) == len(versions)
    con = duckdb.connect()
    from lowrank_batch.archive.table import duckdb_view

    duckdb_view(archive, con, "images")
    got = con.sql("select image_id, run_id from images order by image_id").fetchall()
    assert [g[0] for g in got] == sorted(versions)
    assert dict(got)["m00-0.png"] == "r2" and dict(got)["m04-0.png"] == "r1"


def test_dicom_columns_of_metadata():
    assert dicom_columns({"format": "PNG"}) == dict.fromkeys(DICOM_COLUMNS)
    got = dicom_columns({"format": "DICOM", "Modality": "MR", "dicom_json": {"0020000D": {"vr": "UI", "Value": ["9"]}}})
    assert got == {"modality": "MR", "study_instance_uid": "9", "series_instance_uid": None, "sop_instance_uid": None}


def test_an_encode_worker_fills_the_dicom_columns(tmp_path):
    import shutil

    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from lowrank_batch.pipeline.units import list_sources, make_units
    from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker

    path = get_testdata_file("CT_small.dcm")
    (tmp_path / "src").mkdir()
    shutil.copy(path, tmp_path / "src" / "ct.dcm")
    (unit,) = make_units(list_sources(str(tmp_path / "src")), 4)
    EncodeWorker(str(tmp_path / "dst"), "r1", EncodeSettings()).encode_unit(unit)
    row = Archive.open(str(tmp_path / "dst")).to_arrow(list(DICOM_COLUMNS)).to_pylist()[0]
    ds = dcmread(path)
    assert row == {"image_id": "ct.dcm", "modality": ds.Modality, "study_instance_uid": ds.StudyInstanceUID,
                   "series_instance_uid": ds.SeriesInstanceUID, "sop_instance_uid": ds.SOPInstanceUID}
