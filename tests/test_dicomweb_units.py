"""The pure parts of the DICOMweb source and service: URL and filter parsing, credentials,
multipart framing, Accept negotiation, QIDO matching, the DICOM window. No servers."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from lowrank_batch.errors import InvalidParameterError
from lowrank_batch.serve.app import ServeOptions, is_loopback, resolve_token
from lowrank_batch.serve.index import build_index
from lowrank_batch.serve.negotiate import choose_image, choose_json, choose_multipart
from lowrank_batch.serve.query import QueryError, parse_query, search_instances, search_series, search_studies
from lowrank_batch.serve.render import Window, parse_window, to_display
from lowrank_batch.sources.auth import auth_headers
from lowrank_batch.sources.dicomweb import element_hash, image_id, parse_source
from lowrank_batch.sources.multipart import join_parts, split_parts


def test_source_url_filters_and_refusals():
    s = parse_source("dicomweb+http://pacs:8042/dicom-web/?Modality=CT&StudyDate=20200101-20201231")
    assert s.base == "http://pacs:8042/dicom-web"
    assert s.series_filters == {"Modality": "CT"}
    assert s.study_filters == {"ModalitiesInStudy": "CT", "StudyDate": "20200101-20201231"}
    assert parse_source("dicomweb+https://pacs/dw?StudyDate=20200101-").study_filters == {"StudyDate": "20200101-"}
    with pytest.raises(InvalidParameterError, match="must not carry credentials"):
        parse_source("dicomweb+http://user:secret@pacs/dicom-web")
    with pytest.raises(InvalidParameterError, match="unknown filter 'Colour'"):
        parse_source("dicomweb+http://pacs/dicom-web?Colour=red")
    with pytest.raises(InvalidParameterError, match="StudyDate must be"):
        parse_source("dicomweb+http://pacs/dicom-web?StudyDate=2020")


def test_ids_are_uid_paths_and_the_version_ignores_the_servers_address():
    assert image_id("1.2", "1.2.3", "1.2.3.4") == "1.2/1.2.3/1.2.3.4.dcm"
    assert image_id("1.2", "../x", "y") == "1.2/..%2Fx/y.dcm"  # a hostile UID cannot climb out of an id
    a = {"00080018": {"vr": "UI", "Value": ["1.2"]}, "7FE00010": {"vr": "OW", "BulkDataURI": "http://a/x"}}
    b = {"7FE00010": {"vr": "OW", "BulkDataURI": "http://b/y"}, "00080018": {"vr": "UI", "Value": ["1.2"]}}
    assert element_hash(a) == element_hash(b)
    assert element_hash(a) != element_hash({**a, "0008103E": {"vr": "LO", "Value": ["changed"]}})


def test_credentials_come_from_the_environment_or_a_file(monkeypatch, tmp_path):
    for key in ("LOWRANK_DICOMWEB_TOKEN", "LOWRANK_DICOMWEB_USER", "LOWRANK_DICOMWEB_PASSWORD",
                "LOWRANK_DICOMWEB_CREDENTIALS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOWRANK_HOME", str(tmp_path))
    assert auth_headers("http://pacs:8042/dicom-web") == {}
    (tmp_path / "dicomweb-credentials.json").write_text(json.dumps({"pacs:8042": {"username": "u", "password": "p"}}))
    assert auth_headers("http://pacs:8042/x") == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert auth_headers("http://other:1/x") == {}
    named = tmp_path / "token.json"
    named.write_text(json.dumps({"token": "t0k"}))
    monkeypatch.setenv("LOWRANK_DICOMWEB_CREDENTIALS", str(named))
    assert auth_headers("http://any/x") == {"Authorization": "Bearer t0k"}
    named.write_text("{not json, secret-value")
    with pytest.raises(InvalidParameterError) as caught:
        auth_headers("http://any/x")
    assert "secret-value" not in str(caught.value)
    monkeypatch.setenv("LOWRANK_DICOMWEB_TOKEN", "envtoken")
    assert auth_headers("http://any/x") == {"Authorization": "Bearer envtoken"}


def test_multipart_round_trip():
    parts = [({"Content-Type": "application/dicom"}, b"\r\n--tricky\r\nbytes"), ({"Content-Type": "x/y"}, b"")]
    body, content_type = join_parts(parts, "application/dicom")
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    back = split_parts(body, content_type)
    assert [p for _, p in back] == [b"\r\n--tricky\r\nbytes", b""]
    assert back[0][0]["content-type"] == "application/dicom"
    with pytest.raises(ValueError):
        split_parts(b"plain", "application/dicom")


def test_accept_negotiation():
    assert choose_multipart(None, "application/dicom")
    assert choose_multipart('multipart/related; type="application/dicom"; transfer-syntax=*', "application/dicom")
    assert choose_multipart("multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
                            "application/dicom")
    assert not choose_multipart('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
                                "application/dicom")
    assert not choose_multipart('multipart/related; type="application/octet-stream"', "application/dicom")
    assert not choose_multipart("image/jpeg", "application/dicom")
    assert choose_json("application/dicom+json") and choose_json("*/*") and not choose_json("image/png")
    assert choose_image("image/png, image/jpeg;q=0.5") == "image/png"
    assert choose_image("image/png;q=0.2, image/jpeg") == "image/jpeg"
    assert choose_image("*/*") == "image/jpeg" and choose_image("image/gif") is None


def _row(study, series, sop, modality="CT", patient="P1", date="20200102", frames=1, frame=0, suffix=""):
    ds = {"0020000D": {"vr": "UI", "Value": [study]}, "0020000E": {"vr": "UI", "Value": [series]},
          "00080018": {"vr": "UI", "Value": [sop]}, "00080060": {"vr": "CS", "Value": [modality]},
          "00100020": {"vr": "LO", "Value": [patient]}, "00080020": {"vr": "DA", "Value": [date]},
          "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}
    meta = {"format": "DICOM", "dicom_json": ds, "frames": frames, "frame": frame, "PhotometricInterpretation": "MONOCHROME2"}
    return {"image_id": f"{sop}.dcm{suffix}", "metadata_json": json.dumps(meta)}


def _index():
    return build_index([_row("1.1", "1.1.1", "1.1.1.1"), _row("1.1", "1.1.2", "1.1.2.1", "MR"),
                        _row("2.1", "2.1.1", "2.1.1.1", patient="P2", date="20210505", frames=2, suffix="#0"),
                        _row("2.1", "2.1.1", "2.1.1.1", patient="P2", date="20210505", frames=2, frame=1, suffix="#1"),
                        _row("3.1", "3.1.1", "3.1.1.1", frames=3, suffix="#0"),  # frames missing: not served
                        {"image_id": "photo.png", "metadata_json": json.dumps({"format": "PNG"})}])


def _uids(results, tag):
    return [r[tag]["Value"][0] for r in results]


def test_index_groups_frames_and_leaves_out_incomplete_files():
    index = _index()
    assert sorted(index.studies) == ["1.1", "2.1"] and index.incomplete == 1
    assert index.instances["2.1.1.1"].frame_ids == ["2.1.1.1.dcm#0", "2.1.1.1.dcm#1"]


def test_qido_matching():
    index, base = _index(), "http://h/dicom-web"
    studies = search_studies(index, parse_query([]), base)
    assert _uids(studies, "0020000D") == ["1.1", "2.1"]
    assert studies[0]["00080061"]["Value"] == ["CT", "MR"] and studies[0]["00201208"]["Value"] == [2]
    assert _uids(search_studies(index, parse_query([("PatientID", "P2")]), base), "0020000D") == ["2.1"]
    assert _uids(search_studies(index, parse_query([("00100020", "P*")]), base), "0020000D") == ["1.1", "2.1"]
    assert _uids(search_studies(index, parse_query([("StudyDate", "20210101-")]), base), "0020000D") == ["2.1"]
    assert _uids(search_studies(index, parse_query([("StudyDate", "-20201231")]), base), "0020000D") == ["1.1"]
    assert _uids(search_studies(index, parse_query([("PatientName", "Doe*")]), base), "0020000D") == ["1.1", "2.1"]
    assert _uids(search_studies(index, parse_query([("StudyInstanceUID", "9.9,2.1")]), base), "0020000D") == ["2.1"]
    assert _uids(search_series(index, parse_query([("Modality", "MR")]), base, None), "0020000E") == ["1.1.2"]
    assert _uids(search_instances(index, parse_query([("limit", "1"), ("offset", "1")]), base, None, None),
                 "00080018") == ["1.1.2.1"]
    assert "00100010" not in search_series(index, parse_query([]), base, "1.1")[0]  # study attributes not repeated
    full = search_instances(index, parse_query([("includefield", "all")]), base, "2.1", "2.1.1")[0]
    assert full["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    for bad in ([("limit", "x")], [("StudyDate", "2020")], [("Nonsense", "1")], [("includefield", "Nope")],
                [("fuzzymatching", "maybe")]):
        with pytest.raises(QueryError):
            parse_query(bad)


def test_the_dicom_window_rescale_and_monochrome1():
    ds = {"00281050": {"vr": "DS", "Value": [40]}, "00281051": {"vr": "DS", "Value": [400]},
          "00281052": {"vr": "DS", "Value": [-1024]}, "00281053": {"vr": "DS", "Value": [1]}}
    stored = np.array([[0, 1024 - 160, 1024 + 40, 1024 + 240, 4000]], dtype=np.uint16)  # HU -1024, -160, 40, 240, 2976
    y = to_display(stored, ds, "MONOCHROME2")
    # PS3.3 C.11.2.1.2.1: below c-0.5-(w-1)/2 -> 0, above c-0.5+(w-1)/2 -> 255, linear between
    assert y.tolist() == [[0, 0, 128, 255, 255]]
    assert to_display(stored, ds, "MONOCHROME1").tolist() == [[255, 255, 127, 0, 0]]
    assert to_display(stored, ds, "MONOCHROME2", Window(41, 2, "LINEAR")).tolist() == [[0, 0, 0, 255, 255]]
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert np.array_equal(to_display(rgb, {}, "RGB"), rgb)
    assert parse_window("40,400,linear") == Window(40.0, 400.0, "LINEAR")
    for bad in ("40,400", "a,b,linear", "40,0,linear", "40,400,cubic"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_the_service_is_loopback_unless_a_token_guards_it(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert resolve_token(ServeOptions("a")) is None
    with pytest.raises(InvalidParameterError, match="access token is required"):
        resolve_token(ServeOptions("a", host="0.0.0.0"))
    token = tmp_path / "t"
    token.write_text("short\n")
    with pytest.raises(InvalidParameterError, match="at least 16"):
        resolve_token(ServeOptions("a", host="0.0.0.0", token_file=str(token)))
    token.write_text("a-long-enough-secret-token\n")
    assert resolve_token(ServeOptions("a", host="0.0.0.0", token_file=str(token))) == "a-long-enough-secret-token"


def test_the_commands_refuse_exposed_services_and_credentials_in_urls(capsys):
    from lowrank_batch.cli import main

    assert main(["serve", "/nonexistent-archive", "--host", "0.0.0.0"]) == 2  # before any Ray starts
    assert "--token-file" in capsys.readouterr().err
    assert main(["encode", "dicomweb+http://user:pw@127.0.0.1:9/dicom-web", "/tmp/unused-archive"]) == 2
    err = capsys.readouterr().err
    assert "must not carry credentials" in err and "pw@" not in err
