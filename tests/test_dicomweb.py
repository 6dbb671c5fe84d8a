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

PLANTED = {"PatientName": "DWPLANTEDSURNAME^DWPLANTEDGIVEN", "PatientID": "DWPLANTED-ID-0042",
           "InstitutionName": "DWPLANTED HOSPITAL"}
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


# -- the archive served as DICOMweb on Ray Serve --

@pytest.fixture(scope="module")
def served(archive, tmp_path_factory):
    from ray import serve

    from lowrank_batch.serve.app import ServeOptions, start

    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    url = start(ServeOptions(str(archive.path), port=_free_port(), token_file=str(token_file), replicas=1,
                             cpus_per_replica=0.5, gpus_per_replica=0))
    try:
        yield url
    finally:
        serve.shutdown()


def _client(url: str, token: str = TOKEN):
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url, headers={"Authorization": f"Bearer {token}"})


def _uid_values(results: list[dict], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def test_search_finds_every_archived_study_series_and_instance(served, originals):
    client = _client(served)
    uids = [_uids(d) for d in originals.values()]
    assert _uid_values(client.search_for_studies(), "0020000D") == {u[0] for u in uids}
    for study, series, sop in uids:
        assert series in _uid_values(client.search_for_series(study), "0020000E")
        assert sop in _uid_values(client.search_for_instances(study, series), "00080018")
    assert _uid_values(client.search_for_instances(), "00080018") == {u[2] for u in uids}
    # matching on the archived elements: PatientID (wildcard), Modality, StudyDate range, UID lists
    assert len(client.search_for_studies(search_filters={"PatientID": "DWPLANTED-*"})) == len({u[0] for u in uids})
    ct_study = _uids(originals["ct"])[0]
    assert _uid_values(client.search_for_series(search_filters={"Modality": "CT"}), "0020000D") == {ct_study}
    ct_date = pydicom.dcmread(io.BytesIO(originals["ct"])).StudyDate
    hits = client.search_for_studies(search_filters={"StudyDate": f"{ct_date}-{ct_date}"})
    assert ct_study in _uid_values(hits, "0020000D")
    assert all(h["00080020"]["Value"][0] == ct_date for h in hits)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": "1.2.3.999"}) == []


def test_retrieved_instances_equal_the_originals(served, originals):
    client = _client(served)
    for key, data in originals.items():
        original = pydicom.dcmread(io.BytesIO(data))
        got = client.retrieve_instance(*_uids(data))
        assert_same_elements(original, got)
        assert np.array_equal(got.pixel_array, original.pixel_array), key
        metadata = client.retrieve_instance_metadata(*_uids(data))
        assert metadata["00080018"]["Value"] == [original.SOPInstanceUID]
    study = _uids(originals["mr_frames"])[0]  # a whole study: every instance of it
    assert {ds.SOPInstanceUID for ds in client.retrieve_study(study)} == {_uids(originals["mr_frames"])[2]}


def test_frames_and_rendered_images_in_the_negotiated_media_types(served, originals):
    from lowrank_batch.serve.render import to_display

    client = _client(served)
    for key in ("mr_frames", "rgb", "ct"):
        original = pydicom.dcmread(io.BytesIO(originals[key]))
        frames = original.pixel_array if key == "mr_frames" else original.pixel_array[None]
        numbers = [1, len(frames)] if len(frames) > 1 else [1]
        got = client.retrieve_instance_frames(*_uids(originals[key]), frame_numbers=numbers,
                                              media_types=("application/octet-stream",))
        for n, raw in zip(numbers, got):
            want = frames[n - 1]
            assert raw == want.astype(want.dtype.newbyteorder("<")).tobytes(), (key, n)
    ct = pydicom.dcmread(io.BytesIO(originals["ct"]))
    png = client.retrieve_instance_rendered(*_uids(originals["ct"]), media_types=("image/png",))
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (ct.Columns, ct.Rows)
        dataset = json.loads(json.dumps(ct.to_json_dict(bulk_data_threshold=1 << 30)))
        assert np.array_equal(np.asarray(img), to_display(ct.pixel_array, dataset, "MONOCHROME2"))
    jpeg = client.retrieve_instance_rendered(*_uids(originals["ct"]), media_types=("image/jpeg",),
                                             params={"quality": 50})  # a preview: from the latents alone
    with Image.open(io.BytesIO(jpeg)) as img, Image.open(io.BytesIO(png)) as full:
        assert img.format == "JPEG" and img.size == (ct.Columns, ct.Rows)
        # the same picture, coarser (a lossless archive's preview keeps 4 latents per 16x16 patch)
        r = np.corrcoef(np.asarray(img, dtype=np.float64).ravel(), np.asarray(full, dtype=np.float64).ravel())[0, 1]
        assert r > 0.9, r
    frame = client.retrieve_instance_frames_rendered(*_uids(originals["mr_frames"]), frame_numbers=[2],
                                                     media_types=("image/png",))
    with Image.open(io.BytesIO(frame)) as img:
        assert img.format == "PNG"


def test_a_missing_or_wrong_token_is_refused(served):
    assert requests.get(f"{served}/studies", timeout=30).status_code == 401
    r = requests.get(f"{served}/studies", headers={"Authorization": "Bearer wrong-token-wrong-token"}, timeout=30)
    assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
    with pytest.raises(requests.HTTPError) as caught:
        _client(served, "not-the-token-at-all").search_for_studies()
    assert caught.value.response.status_code == 401


def test_bad_requests_get_the_standard_status_codes(served, originals):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    study, series, sop = _uids(originals["mr_frames"])
    inst = f"{served}/studies/{study}/series/{series}/instances/{sop}"
    dicom = {**auth, "Accept": 'multipart/related; type="application/dicom"'}
    octets = {**auth, "Accept": 'multipart/related; type="application/octet-stream"'}
    cases = [
        ("GET", f"{served}/studies/1.2.3.4.5.6", dicom, 404),  # unknown UIDs
        ("GET", f"{served}/studies/{study}/series/1.2.3.4", dicom, 404),
        ("GET", f"{served}/studies/{study}/series/{series}/instances/1.2.3", dicom, 404),
        ("GET", f"{served}/studies?StudyDate=2020-13x", auth, 400),  # malformed queries
        ("GET", f"{served}/studies?limit=-1", auth, 400),
        ("GET", f"{served}/studies?NotAnAttribute=1", auth, 400),
        ("GET", inst, {**auth, "Accept": 'multipart/related; type="application/dicom"; '
                                         'transfer-syntax=1.2.840.10008.1.2.4.50'}, 406),  # unsupported media
        ("GET", inst, {**auth, "Accept": "image/gif"}, 406),
        ("GET", f"{inst}/rendered", {**auth, "Accept": "image/gif"}, 406),
        ("GET", f"{served}/studies", {**auth, "Accept": "application/xml"}, 406),
        ("GET", f"{inst}/frames/11", octets, 404),  # 10 frames: no frame 11
        ("GET", f"{inst}/frames/0", octets, 400),  # frame numbers start at 1
        ("GET", f"{inst}/frames/one", octets, 400),
        ("DELETE", inst, auth, 405),  # read-only
        ("GET", f"{served}/nothing-here", auth, 404),
    ]
    for method, url, headers, status in cases:
        r = requests.request(method, url, headers=headers, timeout=60)
        assert r.status_code == status, (method, url.removeprefix(served), headers.get("Accept"), r.status_code)


def test_orthanc_retrieves_studies_from_our_service(served, pacs, originals):
    """Interop with a real PACS: the studies deleted from Orthanc come back from the archive,
    through Orthanc's own DICOMweb client, equal to the originals."""
    pacs.rest("PUT", "/dicom-web/servers/lowrank", json={
        "Url": served + "/", "HttpHeaders": {"Authorization": f"Bearer {TOKEN}"}})
    studies = sorted({_uids(d)[0] for d in originals.values()})
    for study in studies:
        for orthanc_id in pacs.rest("POST", "/tools/find", json={"Level": "Study",
                                                                  "Query": {"StudyInstanceUID": study}}).json():
            pacs.rest("DELETE", f"/studies/{orthanc_id}")
    assert pacs.rest("GET", "/instances").json() == []
    pacs.rest("POST", "/dicom-web/servers/lowrank/retrieve",
              json={"Resources": [{"Study": s} for s in studies], "Synchronous": True})
    for key, data in originals.items():
        sop = _uids(data)[2]
        found = pacs.rest("POST", "/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop}}).json()
        assert len(found) == 1, key
        stored = pydicom.dcmread(io.BytesIO(pacs.rest("GET", f"/instances/{found[0]}/file").content))
        original = pydicom.dcmread(io.BytesIO(data))
        assert_same_elements(original, stored)
        assert np.array_equal(stored.pixel_array, original.pixel_array), key


def test_no_patient_data_in_the_service_logs(served, originals):
    import ray

    client = _client(served)
    client.search_for_studies(search_filters={"PatientID": PLANTED["PatientID"]})
    client.search_for_studies(search_filters={"PatientName": PLANTED["PatientName"]})
    requests.get(f"{served}/studies?PatientID={PLANTED['PatientID']}&bogus=1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    scanned = 0
    for path in logs.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt"):
            text = path.read_bytes().decode("latin-1")
            scanned += 1
            for value in PLANTED.values():
                assert value not in text and value.split("^")[0] not in text, f"{value!r} in {path}"
    assert scanned and any((logs / "serve").glob("*.log")), "the Serve logs were not found"


def test_fetch_errors_become_read_failures_or_retried_outages(pacs, monkeypatch):
    """What the worker's retry and failure records see: a gone instance and refused
    credentials are failures of that image; an unreachable server is an outage (retried)."""
    from lowrank_batch.sources.dicomweb import fetch_instance, list_instances
    from lowrank_batch.storage import is_storage_error, is_transient

    gone = f"dicomweb+{pacs.dicomweb}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    with pytest.raises(FileNotFoundError) as caught:
        fetch_instance(gone)
    assert is_storage_error(caught.value) and not is_transient(caught.value)
    monkeypatch.setenv("LOWRANK_DICOMWEB_USER", USER)
    monkeypatch.setenv("LOWRANK_DICOMWEB_PASSWORD", "not-the-password")
    with pytest.raises(PermissionError) as caught:
        list_instances(f"dicomweb+{pacs.dicomweb}")
    assert "not-the-password" not in str(caught.value) and not is_transient(caught.value)
    with pytest.raises(ConnectionError) as caught:
        fetch_instance(f"dicomweb+http://127.0.0.1:{_free_port()}/dicom-web/studies/1/series/2/instances/3")
    assert is_transient(caught.value)


def test_a_changed_instance_is_archived_again(archive, pacs, originals):
    """Last in this module: it changes the PACS and the archive the tests above compare with."""
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


@pytest.mark.slow  # ~70 s on 2 busy cores: a second Ray, started by the command in its own process
def test_the_serve_command_answers_and_stops_on_sigterm(archive, tmp_path):
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rsrv", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lowrank_batch.cli", "serve", str(archive.path), "--port", str(port),
                             "--replicas", "1", "--gpus-per-replica", "0", "--cpus-per-replica", "0.5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 240
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "serving" in line, line
        studies = requests.get(f"http://127.0.0.1:{port}/dicom-web/studies", timeout=60)
        assert studies.status_code == 200 and len(studies.json()) == len({_uids(d)[0] for d in _all_originals()})
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _all_originals() -> list[bytes]:
    return [_file(v) for v in {**FIRST, **ADDED}.values()]
