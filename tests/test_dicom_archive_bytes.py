"""Kept DICOM bytes through the archive: an archive written by the encode worker, read back by
`decode --format dicom` and checked by `verify`, also after a byte of a kept header flips, and
archives written before the kept bytes (split from test_dicom_bytes.py, which covers the file
rebuild itself)."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom

from lowrank_batch.images.dicom_bytes import KeptFile

from .test_dicom_bytes import _bytes


FILES = {"ct.dcm": "CT_small.dcm", "series/mr_frames.dcm": "emri_small.dcm", "mr_rle.dcm": "MR_small_RLE.dcm",
         "be.dcm": "MR_small_bigendian.dcm", "deflated.dcm": "image_dfl.dcm"}


def _archive(tmp_path, mode="lossless", **kw):
    from lowrank_batch.pipeline.units import list_sources, make_units
    from lowrank_batch.pipeline.worker import EncodeSettings, EncodeWorker

    src = tmp_path / "src"
    for target, name in FILES.items():
        (src / target).parent.mkdir(parents=True, exist_ok=True)
        (src / target).write_bytes(_bytes(name))
    dst = tmp_path / "archive"
    worker = EncodeWorker(str(dst), "run-1", EncodeSettings(mode, **kw))
    for unit in make_units(list_sources(str(src)), 3):
        assert not worker.encode_unit(unit).failures
    return src, dst


def _data_files(dst):
    return sorted((dst / "data").glob("*.parquet"))


def _rewrite(path, edit):
    """Rewrite a committed data file with edited columns, same rows, same row groups."""
    from lowrank_batch.archive.schema import ROWS_PER_GROUP

    table = edit(pq.read_table(path))
    pq.write_table(table, path, row_group_size=ROWS_PER_GROUP, compression="none")


def test_archive_decode_and_verify_give_back_and_check_the_files(codec, tmp_path, capsys):
    from lowrank_batch.archive import Archive
    from lowrank_batch.cli import main

    src, dst = _archive(tmp_path)
    rows = {r["image_id"]: r for r in Archive.open(str(dst)).rows(["dicom_header", "dicom_sha256"])}
    # once per file, on its first frame
    assert rows["series/mr_frames.dcm#0"]["dicom_header"] and rows["series/mr_frames.dcm#1"]["dicom_header"] is None
    assert rows["ct.dcm"]["dicom_sha256"] == hashlib.sha256((src / "ct.dcm").read_bytes()).hexdigest()
    assert rows["deflated.dcm"]["dicom_header"] is None and rows["deflated.dcm"]["dicom_sha256"]
    out = tmp_path / "out"
    assert main(["decode", str(dst), "--format", "dicom", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for target in ("ct.dcm", "series/mr_frames.dcm", "be.dcm"):
        assert (out / target.replace("/", "__")).read_bytes() == (src / target).read_bytes(), target
        assert f"{target} -> " in printed
    assert "byte-identical to the archived file" in printed
    assert "pixels re-encoded as RLE Lossless" in printed
    assert "original bytes not kept: its data set is deflated" in printed
    rle = pydicom.dcmread(out / "mr_rle.dcm")
    assert np.array_equal(rle.pixel_array, pydicom.dcmread(src / "mr_rle.dcm").pixel_array)
    assert main(["verify", str(dst)]) == 0
    assert "14 ok, 0 failed" in capsys.readouterr().out  # 10 frames + ct + be + rle + deflated


def test_verify_finds_a_flipped_byte_in_a_kept_header(codec, tmp_path, capsys):
    from lowrank_batch.cli import main

    src, dst = _archive(tmp_path)
    # 1. a header forged with one flipped byte (its own digest made to match): only the
    #    whole-file SHA-256 can tell
    def forge(table):
        column = table.column("dicom_header").to_pylist()
        ids = table.column("image_id").to_pylist()
        if "be.dcm" in ids:
            i = ids.index("be.dcm")
            kept = KeptFile.unpack(column[i], "be.dcm")
            shell = bytearray(kept.shell)
            shell[kept.element_start - 3] ^= 0x20  # a byte of the element just before the pixels
            column[i] = KeptFile(bytes(shell), kept.element_start, kept.cut, kept.cut_length).pack()
        return table.set_column(table.schema.get_field_index("dicom_header"), "dicom_header",
                                pa.array(column, pa.binary()))
    for path in _data_files(dst):
        _rewrite(path, forge)
    assert main(["verify", str(dst)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED be.dcm: be.dcm: the rebuilt DICOM file's SHA-256 differs" in printed
    assert printed.count("FAILED") == 1
    assert main(["decode", str(dst), "--id", "be.dcm", "--format", "dicom", "--out", str(tmp_path / "be.dcm")]) != 0
    assert "be.dcm: the rebuilt DICOM file's SHA-256 differs" in capsys.readouterr().err
    assert not (tmp_path / "be.dcm").exists()  # no file that is not the archived one
    # 2. bit rot in the stored bytes of another file's header (the Parquet file itself)
    blob = None
    for path in _data_files(dst):
        table = pq.read_table(path)
        ids = table.column("image_id").to_pylist()
        if "ct.dcm" in ids:
            blob = table.column("dicom_header").to_pylist()[ids.index("ct.dcm")]
            raw = bytearray(path.read_bytes())
            at = raw.index(blob) + len(blob) // 2
            raw[at] ^= 0x04
            path.write_bytes(bytes(raw))
    assert blob is not None
    assert main(["verify", str(dst)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED ct.dcm: ct.dcm: the kept DICOM header is damaged" in printed


def test_archives_written_before_the_kept_bytes_still_decode(codec, tmp_path, capsys):
    """An archive written before the dicom_header/dicom_sha256 columns existed: its files are
    rebuilt from the DICOM JSON as before, listed, verified."""
    from lowrank_batch.cli import main

    src, dst = _archive(tmp_path)
    for path in _data_files(dst):
        _rewrite(path, lambda t: t.drop_columns(["dicom_header", "dicom_sha256"]))
        assert "dicom_header" not in pq.read_schema(path).names
    out = tmp_path / "out"
    assert main(["decode", str(dst), "--format", "dicom", "--out", str(out)]) == 0
    assert "rebuilt from its DICOM JSON" in capsys.readouterr().out
    ct = pydicom.dcmread(out / "ct.dcm")
    assert np.array_equal(ct.pixel_array, pydicom.dcmread(src / "ct.dcm").pixel_array)
    assert main(["verify", str(dst)]) == 0
    assert main(["ls", str(dst)]) == 0
    from lowrank_batch.archive import Archive

    row = Archive.open(str(dst)).row("ct.dcm", ["metadata_json", "dicom_header", "dicom_sha256"])
    assert row["dicom_header"] is None and row["dicom_sha256"] is None  # absent columns read as None
    assert "dicom_json" in json.loads(row["metadata_json"])  # search and DICOMweb still read the JSON
