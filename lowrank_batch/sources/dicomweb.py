"""A PACS as an encode source: `dicomweb+http(s)://host:port/dicom-web[?filters]`.

The driver lists instances with QIDO-RS (studies, then their series, matching the filters) and
one WADO-RS metadata request per series (the instances, and each one's version); the Ray
workers fetch each instance's Part 10 bytes with WADO-RS. Everything after that (units,
failure records, retries, commits, reruns) is the file job's own.

- Image id: `StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID.dcm` (frames of a multi-frame
  instance `...dcm#k`): stable across runs, readable, grouped as a viewer groups them.
- Version (the row's `source_etag`): the SHA-256 of the instance's elements as the server
  reports them (its WADO-RS metadata, bulk data URIs left out). A rerun skips every instance
  whose UID is archived with the same hash; an instance whose elements changed under the same
  UID is a changed source, archived again (its new row supersedes the old). DICOMweb offers no
  cheaper content version: pixels replaced behind identical elements are not seen.
- Filters (query string, all optional): `Modality=CT` (series; studies by ModalitiesInStudy),
  `StudyDate=YYYYMMDD` or a range `YYYYMMDD-YYYYMMDD` (either end may be open),
  `StudyInstanceUID=...`, `PatientID=...`.
- Credentials: sources/auth.py (environment or file); a URL carrying user:password@ is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

from ..errors import InvalidParameterError
from .files import SourceFile
from .auth import auth_headers
from .multipart import split_parts

SCHEMES = ("dicomweb+http://", "dicomweb+https://")
STUDY_FILTERS = ("StudyDate", "StudyInstanceUID", "PatientID")
SERIES_FILTERS = ("Modality",)
PAGE = 1000  # QIDO results asked per request (servers may cap lower; paging continues while full)
TIMEOUT = (10, 300)  # connect, read (seconds)
INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")


class DicomwebUnavailable(ConnectionError):
    """The server could not be reached, or answered 5xx/429: retried as a storage outage."""


def is_dicomweb(uri: str) -> bool:
    return uri.startswith(SCHEMES)


@dataclass(frozen=True)
class DicomwebSource:
    base: str  # http(s)://host:port/path, no trailing slash
    study_filters: dict = field(default_factory=dict)
    series_filters: dict = field(default_factory=dict)


def parse_source(src: str) -> DicomwebSource:
    """The server's base URL and the QIDO filters of a `dicomweb+...` SRC."""
    if not is_dicomweb(src):
        raise InvalidParameterError(f"{src!r} is not a dicomweb+http(s):// URL")
    parts = urlsplit(src.removeprefix("dicomweb+"))
    if parts.username or parts.password:
        raise InvalidParameterError("a DICOMweb URL must not carry credentials (they would end up in logs and "
                                    "records): set LOWRANK_DICOMWEB_TOKEN or LOWRANK_DICOMWEB_USER/PASSWORD, "
                                    "or LOWRANK_DICOMWEB_CREDENTIALS=FILE")
    if not parts.netloc:
        raise InvalidParameterError(f"{src!r}: no server in the DICOMweb URL")
    study, series = {}, {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "Modality":
            series["Modality"] = value
            study["ModalitiesInStudy"] = value
        elif key == "StudyDate":
            m = _DATE_RANGE.match(value)
            if not value or not m or (value.count("-") == 0 and not m.group(1)):
                raise InvalidParameterError(f"{src!r}: StudyDate must be YYYYMMDD or YYYYMMDD-YYYYMMDD, got {value!r}")
            study["StudyDate"] = value
        elif key in STUDY_FILTERS:
            study[key] = value
        else:
            known = ", ".join(STUDY_FILTERS)
            raise InvalidParameterError(f"{src!r}: unknown filter {key!r} (known: Modality, {known})")
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return DicomwebSource(base, study, series)


def image_id(study: str, series: str, sop: str) -> str:
    return "/".join(quote(u, safe=".") for u in (study, series, sop)) + ".dcm"


def instance_uri(base: str, study: str, series: str, sop: str) -> str:
    return f"dicomweb+{base}/studies/{quote(study, safe='.')}/series/{quote(series, safe='.')}" \
           f"/instances/{quote(sop, safe='.')}"


def element_hash(dataset: dict) -> str:
    """SHA-256 of an instance's DICOM JSON, independent of the server's address (bulk data
    URIs and the retrieve URL left out) and of key order."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("BulkDataURI", "00081190")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return hashlib.sha256(json.dumps(strip(dataset), sort_keys=True).encode()).hexdigest()


def _value(dataset: dict, tag: str) -> str | None:
    values = (dataset.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


class _Client:
    def __init__(self, base: str, headers: dict[str, str]):
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.trust_env = False  # no ~/.netrc or proxy variables: credentials come from auth.py only
        self.session.headers.update(headers)

    def get(self, path: str, params: dict | None = None, accept: str = "application/dicom+json"):
        import requests

        url = f"{self.base}{path}"
        where = f"{urlsplit(self.base).netloc}{urlsplit(url).path}"
        try:
            r = self.session.get(url, params=params, headers={"Accept": accept}, timeout=TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise DicomwebUnavailable(f"DICOMweb server unreachable at {where} ({type(exc).__name__})") from None
        if r.status_code >= 500 or r.status_code == 429:
            raise DicomwebUnavailable(f"DICOMweb server answered HTTP {r.status_code} for {where}")
        if r.status_code in (401, 403):
            raise PermissionError(f"DICOMweb server refused access (HTTP {r.status_code}) to {where}: check "
                                  "LOWRANK_DICOMWEB_TOKEN / _USER and _PASSWORD / _CREDENTIALS")
        if r.status_code == 404:
            raise FileNotFoundError(f"DICOMweb server has no {where} (HTTP 404)")
        if r.status_code != 200 and r.status_code != 204:
            raise OSError(f"DICOMweb server answered HTTP {r.status_code} for {where}")
        return r

    def search(self, path: str, filters: dict) -> list[dict]:
        """A QIDO-RS search, page by page."""
        out: list[dict] = []
        while True:
            r = self.get(path, {**filters, "limit": PAGE, "offset": len(out)})
            page = r.json() if r.status_code == 200 and r.content else []
            out += page
            if len(page) < PAGE:
                return out


_CLIENTS: dict[tuple, _Client] = {}


def _client(base: str) -> _Client:
    """One keep-alive session per server and credentials in this process (a worker fetches a
    unit's instances one after another: one connection, not one per instance)."""
    headers = auth_headers(base)  # read each time: rotated credentials take effect at once
    key = (base, tuple(sorted(headers.items())))
    if key not in _CLIENTS:
        if len(_CLIENTS) > 16:  # credentials rotated many times in a long-lived worker
            _CLIENTS.clear()
        _CLIENTS[key] = _Client(base, headers)
    return _CLIENTS[key]


def list_instances(src: str) -> list[SourceFile]:
    """Every instance the filters select, sorted by id (QIDO-RS + WADO-RS series metadata)."""
    source = parse_source(src)
    client = _client(source.base)
    series_list = []
    for study in client.search("/studies", source.study_filters):
        study_uid = _value(study, "0020000D")
        if not study_uid:
            continue
        for series in client.search(f"/studies/{quote(study_uid, safe='.')}/series", source.series_filters):
            series_uid = _value(series, "0020000E")
            if series_uid:
                series_list.append((study_uid, series_uid))

    def instances(pair):
        study_uid, series_uid = pair
        r = client.get(f"/studies/{quote(study_uid, safe='.')}/series/{quote(series_uid, safe='.')}/metadata")
        found = []
        for dataset in (r.json() if r.content else []):
            sop = _value(dataset, "00080018")
            if sop:
                found.append(SourceFile(instance_uri(source.base, study_uid, series_uid, sop),
                                        image_id(study_uid, series_uid, sop), 0, element_hash(dataset)))
        return found

    with ThreadPoolExecutor(8) as pool:  # one metadata request per series, a few at a time
        files = [f for found in pool.map(instances, series_list) for f in found]
    return sorted({f.rel: f for f in files}.values(), key=lambda f: f.rel)


def fetch_instance(uri: str) -> bytes:
    """One instance's Part 10 bytes (WADO-RS), in whatever transfer syntax the server stores."""
    if not is_dicomweb(uri):
        raise InvalidParameterError(f"{uri!r} is not a dicomweb+http(s):// URL")
    http = uri.removeprefix("dicomweb+")
    parts = urlsplit(http)
    marker = parts.path.find("/studies/")
    if marker < 0:
        raise InvalidParameterError(f"{uri!r} does not name a DICOMweb instance")
    client = _client(f"{parts.scheme}://{parts.netloc}{parts.path[:marker]}")
    r = client.get(parts.path[marker:], accept=INSTANCE_ACCEPT)
    try:
        found = split_parts(r.content, r.headers.get("Content-Type", ""))
    except ValueError as exc:
        raise OSError(f"DICOMweb server sent a malformed WADO-RS reply for {parts.path} ({exc})") from None
    if len(found) != 1:
        raise OSError(f"DICOMweb server sent {len(found)} parts for one instance {parts.path}")
    return found[0][1]
