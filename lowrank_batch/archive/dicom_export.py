"""An archived DICOM file back as DICOM: its frames decoded, put back into its kept bytes.

Frames of a multi-frame file are archived as `file.dcm#0`, `file.dcm#1`, ...; exporting the
file id gathers them in order. The file's own bytes (less its pixel data) and its SHA-256 are
on its first frame's row (images/dicom_file.py rebuilds it: byte-identical when lossless and
uncompressed); archives written before those columns existed are rebuilt from the DICOM JSON.
The file is declared lossy (LossyImageCompression and co.) whenever any of its frames was
archived lossy or near-lossless.
"""

from __future__ import annotations

import json
import re

from ..errors import InvalidImageError
from .reader import ArchiveError
from ..images.dicom import build_dicom
from ..images.dicom_bytes import KeptFile
from ..images.dicom_file import RebuiltDicom, rebuild_dicom, splices_back

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
    """The DICOM file of an archived file id (or one of its frame ids' file)."""
    return export_dicom_file(archive, file_id, archive_ids).data


def export_dicom_file(archive, file_id: str, archive_ids: list[str] | None = None,
                      frames: list | None = None) -> RebuiltDicom:
    """The file with what it is (byte-identical or not, and why); `frames`: already decoded."""
    ids = frame_ids(archive_ids if archive_ids is not None else archive.ids(), file_id)
    rows = [archive.row(i, ["image_id", "metadata_json", "mode", "encoded_bytes", "shape", "bits_stored"]
                        + (["dicom_header", "dicom_sha256"] if n == 0 else []))
            for n, i in enumerate(ids)]
    meta = json.loads(rows[0]["metadata_json"] or "{}")
    if meta.get("format") != "DICOM":
        raise InvalidImageError(f"{file_id}: was not archived from DICOM (format {meta.get('format')!r}); "
                                "decode it as png, tiff or npy")
    if len(ids) != int(meta.get("frames", 1)):
        raise ArchiveError(f"{file_id}: the archive holds {len(ids)} of its {meta.get('frames')} frames")
    frames = frames if frames is not None else [archive.get(i) for i in ids]
    modes = {r["mode"] for r in rows}
    mode = "lossy" if "lossy" in modes else "near-lossless" if "near-lossless" in modes else "lossless"
    allocated = int(meta.get("BitsAllocated", 8 * ((rows[0]["bits_stored"] + 7) // 8)))
    raw = sum(f.size for f in frames) * allocated / 8  # DICOM's ratio: uncompressed pixel data / coded
    ratio = raw / max(1, sum(r["encoded_bytes"] for r in rows))
    header = rows[0]["dicom_header"]
    if header is None:  # archived before the file's bytes were kept, or not keepable (deflated)
        why = meta.get("source_file", "not kept: archived by an earlier version")
        return RebuiltDicom(build_dicom(frames, meta, mode, ratio), "1.2.840.10008.1.2.1", False,
                            f"rebuilt from its DICOM JSON as Explicit VR Little Endian (original bytes {why})")
    return rebuild_dicom(frames, header, rows[0]["dicom_sha256"], meta, mode, ratio, file_id)


def kept_files(archive, archive_ids: list[str]) -> dict[str, list[str]]:
    """DICOM files whose own bytes the archive keeps: file id -> its frame ids, in order.
    Row by row (one small column each), so that a damaged data file hides nothing else: its
    images are left to the per-image checks, which name them."""
    out = {}
    known = set(archive_ids)
    for image_id in archive_ids:
        frame = _FRAME.search(image_id)
        if frame and frame.group(1) != "0":
            continue  # the file's bytes are on its first frame's row
        try:
            if archive.row(image_id, ["dicom_sha256"])["dicom_sha256"] is None:
                continue
            file_id = image_id[:-2] if image_id.endswith("#0") and image_id[:-2] not in known else image_id
            out[file_id] = frame_ids(archive_ids, file_id)
        except ArchiveError:
            continue
    return dict(sorted(out.items()))


def verify_dicom_file(archive, file_id: str, archive_ids: list[str], frames: list) -> str:
    """Check what the archive keeps of a DICOM file beyond its pixels (`frames`, decoded and
    checked already): the kept header's own digest, and for a lossless file that splices back
    (uncompressed source) the whole rebuilt file's SHA-256. Raises on damage; says what it checked."""
    ids = frame_ids(archive_ids, file_id)
    first = archive.row(ids[0], ["dicom_header", "dicom_sha256"])
    if first["dicom_header"] is None:  # not keepable (a deflated file): its pixels are all there is
        return "no header kept"
    kept = KeptFile.unpack(first["dicom_header"], file_id)
    modes = {archive.row(i, ["mode"])["mode"] for i in ids}
    if modes == {"lossless"} and splices_back(kept):
        export_dicom_file(archive, file_id, archive_ids, frames)  # raises when the SHA-256 differs
        return "whole file SHA-256 ok"
    return "kept header ok"
