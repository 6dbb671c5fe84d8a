"""PACS in, viewers out, against real servers: Orthanc (Debian's orthanc + orthanc-dicomweb,
started here on 127.0.0.1, stopped by PID) as the PACS, the encode job reading its DICOMweb
endpoint on the shared local Ray, `serve` on Ray Serve, dicomweb-client as the viewer, and
Orthanc again retrieving a study from our service as a remote DICOMweb server.

Real DICOM files from pydicom: a signed CT, a multi-frame MR, an RGB secondary capture and a
MONOCHROME1 CR (RG3, cropped to 256² to keep the run short), each carrying planted patient
identifiers that no log line may show. Orthanc missing is an error, never a skip.
"""

from __future__ import annotations

import io
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.data import get_testdata_file

from lowrank_batch.archive import Archive
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings

from .orthanc import PASSWORD, USER, orthanc
from .test_dicom import assert_same_elements

PLANTED = {"PatientName": "PLANTEDSURNAME^PLANTEDGIVEN", "PatientID": "PLANTED-ID-4711",
           "InstitutionName": "PLANTED HOSPITAL"}
FIRST = {"ct": "CT_small.dcm", "mr_frames": "emri_small.dcm", "rgb": "SC_rgb.dcm", "cr_mono1": "RG3_UNCR.dcm"}
ADDED = {"mr": "MR_small.dcm"}
TOKEN = "test-token-0123456789abcdef"


def _file(name: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    if name == "RG3_UNCR.dcm":  # real CR pixels and header, cropped: a 1760² lossless encode is slow here
        crop = ds.pixel_array[:256, :256].copy()
        ds.Rows, ds.Columns = crop.shape
        ds.PixelData = crop.tobytes()
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _expected_ids(files: dict[str, bytes]) -> set[str]:
    ids = set()
    for data in files.values():
        study, series, sop = _uids(data)
        frames = int(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
        base = f"{study}/{series}/{sop}.dcm"
        ids |= {base} if frames == 1 else {f"{base}#{k}" for k in range(frames)}
    return ids


@dataclass
class Archived:
    path: Path
    runs: dict


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def originals() -> dict[str, bytes]:
    return {k: _file(v) for k, v in {**FIRST, **ADDED}.items()}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, cluster):
    """Orthanc with basic auth; the job finds its credentials in $LOWRANK_HOME (set before Ray
    started, so the Ray workers read the same file), never in a URL or on a command line."""
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        creds = Path(os.environ["LOWRANK_HOME"]) / "dicomweb-credentials.json"
        creds.parent.mkdir(parents=True, exist_ok=True)
        creds.write_text(json.dumps({f"127.0.0.1:{server.port}": {"username": USER, "password": PASSWORD}}))
        try:
            yield server
        finally:
            creds.unlink(missing_ok=True)


def _encode(pacs, dst: Path) -> dict:
    return run_encode(f"dicomweb+{pacs.dicomweb}", str(dst), EncodeSettings(),
                      JobOptions(gpus_per_worker=0, workers=2, batch_size=2, storage_retry_seconds=5), log=lambda _: None)


@pytest.fixture(scope="module")
def archive(pacs, originals, tmp_path_factory) -> Archived:
    """The archive after the first run, a no-change rerun, an added and a changed instance
    (the runs' summaries kept for the test that checks them)."""
    dst = tmp_path_factory.mktemp("dw") / "archive"
    for key in FIRST:
        pacs.upload(originals[key])
    first = _encode(pacs, dst)
    rerun = _encode(pacs, dst)
    pacs.upload(originals["mr"])
    added = _encode(pacs, dst)
    return Archived(dst, {"first": first, "rerun": rerun, "added": added})


def test_encoding_from_the_pacs_archives_every_instance_once(archive, originals):
    runs = archive.runs
    first_ids = _expected_ids({k: originals[k] for k in FIRST})
    assert runs["first"]["failed"] == 0, runs["first"]["failures"]
    assert runs["first"]["encoded"] == len(first_ids)
    assert runs["rerun"]["encoded"] == 0 and runs["rerun"]["skipped"] == len(FIRST)  # nothing new: nothing fetched
    assert runs["added"]["encoded"] == 1 and runs["added"]["skipped"] == len(FIRST)
    opened = Archive.open(str(archive.path))
    assert set(opened.ids()) == _expected_ids(originals)
    for data in originals.values():  # pixels bit for bit, from the PACS's bytes
        ds = pydicom.dcmread(io.BytesIO(data))
        study, series, sop = _uids(data)
        base = f"{study}/{series}/{sop}.dcm"
        frames = ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array[None]
        ids = [base] if len(frames) == 1 else [f"{base}#{k}" for k in range(len(frames))]
        for image_id, frame in zip(ids, frames):
            assert np.array_equal(opened.get(image_id), frame), image_id
    # credentials never reach a record: the URIs name the server only
    text = " ".join(p.read_text() for p in (archive.path / "_commits").glob("*.json"))
    assert PASSWORD not in text and "pacs-test:" not in text


def test_a_changed_instance_is_archived_again(archive, pacs, originals):
    study, series, sop = _uids(originals["ct"])
    found = pacs.rest("POST", "/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop}}).json()
    pacs.rest("DELETE", f"/instances/{found[0]}")
    ds = pydicom.dcmread(io.BytesIO(originals["ct"]))
    ds.SeriesDescription = "re-read with a corrected header"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    pacs.upload(buf.getvalue())
    run = _encode(pacs, archive.path)
    assert run["encoded"] == 1 and run["failed"] == 0
    opened = Archive.open(str(archive.path))
    image_id = f"{study}/{series}/{sop}.dcm"
    assert len(opened.versions(image_id)) == 2  # the new version supersedes, the old stays readable
    meta = json.loads(opened.row(image_id, ["metadata_json"])["metadata_json"])
    assert meta["dicom_json"]["0008103E"]["Value"] == ["re-read with a corrected header"]
    # put the original back for the tests that compare with it
    found = pacs.rest("POST", "/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop}}).json()
    pacs.rest("DELETE", f"/instances/{found[0]}")
    pacs.upload(originals["ct"])
    assert _encode(pacs, archive.path)["encoded"] == 1
