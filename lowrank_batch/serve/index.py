"""Which archived images make which DICOM instance, by Study/Series/SOP Instance UID. Pure:
built from (image_id, metadata_json) rows, whatever the ids (files, buckets or a PACS)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_FRAME = re.compile(r"#(\d+)$")
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    file_id: str  # the archived file's id (frames are file_id#k)
    frame_ids: list[str]  # in frame order
    dataset: dict  # DICOM JSON of every element but the pixel data
    photometric: str
    frames: int  # NumberOfFrames declared (frame_ids must hold them all to be served)


@dataclass
class Index:
    instances: dict[str, Instance] = field(default_factory=dict)  # SOP UID -> instance
    series: dict[str, list[str]] = field(default_factory=dict)  # series UID -> SOP UIDs
    studies: dict[str, list[str]] = field(default_factory=dict)  # study UID -> series UIDs
    incomplete: int = 0  # files with frames missing from the archive (not served)


def _uid(dataset: dict, tag: str) -> str | None:
    values = (dataset.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def build_index(rows) -> Index:
    """rows: dicts with image_id and metadata_json. Non-DICOM images are left out; a file is
    served only when every one of its frames is archived."""
    files: dict[str, list[tuple[int, str, dict]]] = {}
    for row in rows:
        meta = json.loads(row["metadata_json"] or "{}")
        if meta.get("format") != "DICOM" or "dicom_json" not in meta:
            continue
        m = _FRAME.search(row["image_id"])
        frames = int(meta.get("frames", 1) or 1)
        file_id = row["image_id"][: m.start()] if m and frames > 1 else row["image_id"]
        files.setdefault(file_id, []).append((int(meta.get("frame", 0)), row["image_id"], meta))
    index = Index()
    for file_id, frames in sorted(files.items()):
        frames.sort(key=lambda t: t[0])
        meta = frames[0][2]
        ds = meta["dicom_json"]
        study, series, sop = _uid(ds, STUDY_UID), _uid(ds, SERIES_UID), _uid(ds, SOP_UID)
        declared = int(meta.get("frames", 1) or 1)
        if not (study and series and sop):
            continue
        if len(frames) != declared:
            index.incomplete += 1
            continue
        if sop in index.instances:  # the same instance archived under two ids: the later id wins
            old = index.instances[sop]
            index.series[old.series].remove(sop)
        index.instances[sop] = Instance(study, series, sop, file_id, [f[1] for f in frames], ds,
                                        str(meta.get("PhotometricInterpretation", "MONOCHROME2")), declared)
        index.series.setdefault(series, []).append(sop)
        if series not in index.studies.setdefault(study, []):
            index.studies[study].append(series)
    return index
