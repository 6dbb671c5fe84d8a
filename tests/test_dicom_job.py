"""DICOM through the whole system: a real Ray encode job over PACS-like files (with planted
patient identifiers and broken files), `decode --format dicom`, and a scan of every log line,
failure record and run summary for the planted values."""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lowrank_batch.archive import Archive
from lowrank_batch.cli import main
from lowrank_batch.weights.defaults import DEFAULT_ADAPTER_SHA256

from .test_dicom import assert_same_elements

PLANTED = {"PatientName": "PLANTEDSURNAME^PLANTEDGIVEN", "PatientID": "PLANTED-ID-4711",
           "PatientBirthDate": "19010203", "OtherPatientIDs": "PLANTED-OTHER-0815",
           "InstitutionName": "PLANTED HOSPITAL"}
GOOD = {"ct.dcm": "CT_small.dcm", "series/mr_frames.dcm": "emri_small.dcm", "mr_rle.dcm": "MR_small_RLE.dcm",
        "us.dcm": "US1_UNCR.dcm", "seg.dcm": "liver.dcm", "cr.dcm": "RG3_UNCR.dcm"}


def _planted(name):
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    return ds


def _save(ds, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)


def make_pacs_export(folder: Path) -> dict:
    """Good files (all carrying planted identifiers) and bad ones; returns {file: expected reason}."""
    for target, source in GOOD.items():
        _save(_planted(source), folder / target)
    bad = {}
    ds = _planted("CT_small.dcm")
    del ds.PixelData
    _save(ds, folder / "bad/no_pixels.dcm")
    bad["bad/no_pixels.dcm"] = "no PixelData"
    ds = _planted("emri_small.dcm")
    ds.PixelData = ds.PixelData[:1000]
    _save(ds, folder / "bad/short.dcm")
    bad["bad/short.dcm"] = "pixel data is 1000 bytes"
    ds = _planted("CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.999"
    _save(ds, folder / "bad/syntax.dcm")
    bad["bad/syntax.dcm"] = "transfer syntax 1.2.3.4.999"
    buf = io.BytesIO()
    _planted("MR_small.dcm").save_as(buf, enforce_file_format=True)
    (folder / "bad/truncated.dcm").write_bytes(buf.getvalue()[:700])
    bad["bad/truncated.dcm"] = "no PixelData|not a readable DICOM"
    (folder / "bad/garbage.dcm").write_bytes(b"\xff" * 128 + b"NOPE" + b"PLANTED-ID-4711" * 20)
    bad["bad/garbage.dcm"] = "not a readable DICOM"
    # a value pydicom warns about (an invalid date): the warning would quote it
    ds = _planted("MR_small.dcm")
    with warnings.catch_warnings():  # pydicom warns (quoting it) as the test plants the bad value
        warnings.simplefilter("ignore")
        ds["PatientBirthDate"].value = "PLANTED-NOT-A-DATE"
    _save(ds, folder / "odd_date.dcm")
    return bad


def _helps(modality: str) -> bool:
    """auto uses a shipped adapter only where its own figures show it beats the base."""
    from lowrank_batch.pipeline.adapter_choice import measured_worse
    from lowrank_batch.weights.adapters import read_canonical
    from lowrank_batch.weights.defaults import default_adapter_file

    return measured_worse(read_canonical(default_adapter_file(modality), modality).provenance or {}) is None


def _scan(text: str, where: str) -> None:
    for value in list(PLANTED.values()) + ["PLANTED-NOT-A-DATE", "PLANTEDSURNAME"]:
        assert value not in text, f"planted {value!r} found in {where}"


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def test_dicom_archive_round_trip_without_phi_in_any_log(cluster, tmp_path, capsys, caplog):
    src, dst, out = tmp_path / "pacs", tmp_path / "archive", tmp_path / "out"
    bad = make_pacs_export(src)
    ray_tmp = tempfile.mkdtemp(prefix="rphi", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", RAY_TMPDIR=ray_tmp)
    job = subprocess.run([sys.executable, "-m", "lowrank_batch.cli", "encode", str(src), str(dst),
                          "--gpus-per-worker", "0", "--batch-size", "3", "--adapter", "auto"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 1, job.stderr[-3000:]  # finished, with failures on record
    _scan(job.stdout + job.stderr, "the encode job's output")

    archive = Archive.open(str(dst))
    failures = {f["image_id"]: f for f in archive.failures()}
    assert set(failures) == set(bad)
    for name, reason in bad.items():
        import re

        assert re.search(reason, failures[name]["message"]), (name, failures[name]["message"])
    _scan(json.dumps(archive.failures()), "failure records")
    for path in list((dst / "_commits").glob("*.json")) + list((dst / "failures").glob("*")) + \
            list(dst.glob("runs/*")):
        if path.is_file():
            _scan(path.read_bytes().decode("latin-1"), str(path))

    # every good file back as DICOM: same elements, same pixels
    capsys.readouterr()  # drop what building the test files printed (pydicom warns about the bad date)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:  # warnings and log records of the decode, too
        warnings.simplefilter("always")
        assert main(["decode", str(dst), "--format", "dicom", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    _scan(printed.out + printed.err + caplog.text, "the decode output and logs")
    _scan("\n".join(str(w.message) for w in caught), "warnings raised while decoding")
    for target in list(GOOD) + ["odd_date.dcm"]:
        source = pydicom.dcmread(src / target)
        rebuilt = pydicom.dcmread(out / target.replace("/", "__"))
        assert np.array_equal(rebuilt.pixel_array, source.pixel_array), target
        if not source.file_meta.TransferSyntaxUID.is_compressed:
            assert_same_elements(source, rebuilt)
            # lossless means the file: the very bytes archived
            assert (out / target.replace("/", "__")).read_bytes() == (src / target).read_bytes(), target
        assert rebuilt.PatientID == PLANTED["PatientID"]  # clinical data kept in the archive, only there

    # --adapter auto picked by the Modality tag and recorded per image
    rows = {r["image_id"]: r for r in archive.rows(["adapter_sha256", "metadata_json"])}
    expected = {"ct.dcm": "ct", "series/mr_frames.dcm#0": "mr", "cr.dcm": "xray", "us.dcm": None}
    for image_id, modality in expected.items():
        want = DEFAULT_ADAPTER_SHA256.get(modality) if modality and _helps(modality) else None
        assert rows[image_id]["adapter_sha256"] == want, image_id
    assert json.loads(rows["cr.dcm"]["metadata_json"])["PhotometricInterpretation"] == "MONOCHROME1"

    # the job's own Ray session logs (every worker's stdout/stderr) carry no identifiers either
    logs = [p for p in Path(ray_tmp).rglob("*.err") if p.is_file()]
    assert any("worker" in p.name for p in logs), "the job's Ray worker logs were not found"
    for path in Path(ray_tmp).rglob("*"):
        if path.is_file() and path.suffix in (".out", ".err", ".log", ".txt"):
            _scan(path.read_bytes().decode("latin-1"), str(path))
    shutil.rmtree(out)
    shutil.rmtree(ray_tmp, ignore_errors=True)
