"""QIDO-RS (PS3.18 10.6): parsing a search's query parameters and matching them against the
archived elements (DICOM JSON). Pure; a malformed query raises QueryError (HTTP 400)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from .index import Index, Instance

CONTROL = ("limit", "offset", "fuzzymatching", "includefield")
STUDY_TAGS = ("00080005", "00080020", "00080030", "00080050", "00080090", "00081030", "00100010", "00100020",
              "00100030", "00100040", "0020000D", "00200010")
SERIES_TAGS = ("00080060", "00080021", "00080031", "0008103E", "0020000E", "00200011")
INSTANCE_TAGS = ("00080016", "00080018", "00200013", "00280008", "00280010", "00280011", "00280100")
MODALITIES_IN_STUDY, STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES, RETRIEVE_URL = (
    "00080061", "00201206", "00201208", "00201209", "00081190")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")
_TIME = re.compile(r"^(\d{2,6}(\.\d+)?)?(-)?(\d{2,6}(\.\d+)?)?$")


class QueryError(ValueError):
    """A malformed search: answered 400 Bad Request."""


@dataclass
class Query:
    matches: dict[str, str] = field(default_factory=dict)  # tag -> value
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0


def tag_of(name: str) -> str:
    """An attribute named by keyword (PatientID) or tag (00100020), as an upper-case tag."""
    if _TAG.match(name):
        return name.upper()
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(name)
    if tag is None:
        raise QueryError(f"unknown attribute {name!r} in the query")
    return f"{tag:08X}"


def _vr_of(tag: str) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(int(tag, 16))
    except KeyError:
        return "UN"


def parse_query(params: list[tuple[str, str]]) -> Query:
    q = Query()
    for key, value in params:
        if key == "limit" or key == "offset":
            if not value.isdigit():
                raise QueryError(f"{key} must be a non-negative integer")
            setattr(q, key, int(value))
        elif key == "fuzzymatching":
            if value not in ("true", "false"):
                raise QueryError("fuzzymatching must be true or false")
        elif key == "includefield":
            for name in filter(None, value.split(",")):
                if name == "all":
                    q.include_all = True
                else:
                    q.include.add(tag_of(name))
        else:
            tag = tag_of(key)
            vr = _vr_of(tag)
            if vr == "DA" and value and not _DATE.match(value):
                raise QueryError(f"{key} must be a date YYYYMMDD or a range of them")
            if vr == "TM" and value and not _TIME.match(value):
                raise QueryError(f"{key} must be a time HHMMSS or a range of them")
            if vr == "SQ":
                raise QueryError(f"{key}: sequence matching is not supported")
            q.matches[tag] = value
    return q


def _strings(element: dict | None) -> list[str]:
    if not element:
        return []
    out = []
    for v in element.get("Value") or []:
        out.append(v.get("Alphabetic", "") if isinstance(v, dict) else str(v))
    return out


def _match_one(vr: str, wanted: str, have: list[str]) -> bool:
    if wanted == "":  # universal matching: return the attribute, match everything
        return True
    if vr == "UI":
        return bool(set(re.split(r"[\\,]", wanted)) & set(have))
    if vr in ("DA", "TM", "DT") and "-" in wanted:
        lo, _, hi = wanted.partition("-")
        return any((not lo or h >= lo) and (not hi or h <= hi) for h in have)
    if "*" in wanted or "?" in wanted:
        return any(fnmatch.fnmatchcase(h, wanted.replace("[", "[[]")) for h in have)
    return wanted in have


def matches(query: Query, dataset: dict) -> bool:
    return all(_match_one(_vr_of(tag), wanted, _strings(dataset.get(tag))) for tag, wanted in query.matches.items())


def _pick(dataset: dict, tags) -> dict:
    return {t: dataset[t] for t in tags if t in dataset}


def _rows(candidates: list[dict], query: Query, default_tags) -> list[dict]:
    hits = [c for c in candidates if matches(query, c)]
    hits = hits[query.offset:]
    if query.limit:
        hits = hits[: query.limit]
    out = []
    for full in hits:
        if query.include_all:
            keep = {k: v for k, v in full.items() if k != "7FE00010"}
        else:
            keep = _pick(full, set(default_tags) | query.include | set(query.matches))
        out.append(dict(sorted(keep.items())))
    return out


def study_dataset(index: Index, study: str, base: str) -> dict:
    """A study's attributes: its first instance's study-level elements plus the computed ones."""
    sops = [s for series in index.studies[study] for s in index.series[series]]
    first = index.instances[sops[0]].dataset
    modalities = sorted({m for s in index.studies[study]
                         for m in _strings(index.instances[index.series[s][0]].dataset.get("00080060"))[:1]})
    extra = {MODALITIES_IN_STUDY: {"vr": "CS", "Value": modalities},
             STUDY_SERIES: {"vr": "IS", "Value": [len(index.studies[study])]},
             STUDY_INSTANCES: {"vr": "IS", "Value": [len(sops)]},
             RETRIEVE_URL: {"vr": "UR", "Value": [f"{base}/studies/{study}"]}}
    return {**first, **extra}


def series_dataset(index: Index, series: str, base: str) -> dict:
    first = index.instances[index.series[series][0]]
    return {**first.dataset, SERIES_INSTANCES: {"vr": "IS", "Value": [len(index.series[series])]},
            RETRIEVE_URL: {"vr": "UR", "Value": [f"{base}/studies/{first.study}/series/{series}"]}}


def instance_dataset(inst: Instance, base: str) -> dict:
    return {**inst.dataset, RETRIEVE_URL: {"vr": "UR", "Value": [
        f"{base}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"]}}


def search_studies(index: Index, query: Query, base: str) -> list[dict]:
    tags = STUDY_TAGS + (MODALITIES_IN_STUDY, STUDY_SERIES, STUDY_INSTANCES, RETRIEVE_URL)
    return _rows([study_dataset(index, s, base) for s in sorted(index.studies)], query, tags)


def search_series(index: Index, query: Query, base: str, study: str | None) -> list[dict]:
    studies = [study] if study else sorted(index.studies)
    tags = SERIES_TAGS + (SERIES_INSTANCES, RETRIEVE_URL, "0020000D") + (() if study else STUDY_TAGS)
    return _rows([series_dataset(index, se, base) for s in studies for se in index.studies[s]], query, tags)


def search_instances(index: Index, query: Query, base: str, study: str | None, series: str | None) -> list[dict]:
    if series:
        sops = list(index.series[series])
    elif study:
        sops = [sop for se in index.studies[study] for sop in index.series[se]]
    else:
        sops = sorted(index.instances)
    tags = INSTANCE_TAGS + (RETRIEVE_URL, "0020000D", "0020000E") + (() if series else SERIES_TAGS) + \
        (() if study else STUDY_TAGS)
    return _rows([instance_dataset(index.instances[s], base) for s in sops], query, tags)
