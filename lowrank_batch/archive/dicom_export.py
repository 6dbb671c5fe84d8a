"""An archived DICOM file back as DICOM: its frames decoded, its elements from the metadata.

Frames of a multi-frame file are archived as `file.dcm#0`, `file.dcm#1`, ...; exporting the
file id gathers them in order. The file is declared lossy (LossyImageCompression and co.)
whenever any of its frames was archived lossy or near-lossless.
"""

from __future__ import annotations

import json
import re

from ..errors import InvalidImageError
from .reader import ArchiveError
from ..images.dicom import build_dicom

_FRAME = re.compile(r"#(\d+)$")


def file_ids(archive_ids: list[str], wanted: list[str]) -> list[str]:
    """The DICOM files behind `wanted` ids: a frame id maps to its file, in first-seen order."""
    known = set(archive_ids)
    out: dict[str, None] = {}
    for image_id in wanted:
        base = _FRAME.sub("", image_id)
        out[image_id if image_id in known and base == image_id else base] = None
    return list(out)


def frame_ids(archive_ids: list[str], file_id: str) -> list[str]:
    if file_id in archive_ids:
        return [file_id]
    frames = sorted((int(m.group(1)), i) for i in archive_ids
                    if i.startswith(file_id + "#") and (m := _FRAME.search(i)) and i[: m.start()] == file_id)
    if not frames:
        raise ArchiveError(f"no image or frames of {file_id!r} in the archive")
    return [i for _, i in frames]


def export_dicom(archive, file_id: str, archive_ids: list[str] | None = None) -> bytes:
    ids = frame_ids(archive_ids if archive_ids is not None else archive.ids(), file_id)
    rows = [archive.row(i, ["image_id", "metadata_json", "mode", "encoded_bytes", "shape", "bits_stored"])
            for i in ids]
    meta = json.loads(rows[0]["metadata_json"] or "{}")
    if meta.get("format") != "DICOM":
        raise InvalidImageError(f"{file_id}: was not archived from DICOM (format {meta.get('format')!r}); "
                                "decode it as png, tiff or npy")
    if len(ids) != int(meta.get("frames", 1)):
        raise ArchiveError(f"{file_id}: the archive holds {len(ids)} of its {meta.get('frames')} frames")
    frames = [archive.get(i) for i in ids]
    modes = {r["mode"] for r in rows}
    mode = "lossy" if "lossy" in modes else "near-lossless" if "near-lossless" in modes else "lossless"
    allocated = int(meta.get("BitsAllocated", 8 * ((rows[0]["bits_stored"] + 7) // 8)))
    raw = sum(f.size for f in frames) * allocated / 8  # DICOM's ratio: uncompressed pixel data / coded
    ratio = raw / max(1, sum(r["encoded_bytes"] for r in rows))
    return build_dicom(frames, meta, mode, ratio)
