"""Images back from an archive: the one decode path of `lowrank-batch decode` and the decode job.

    archive (stored rows) --EncodedImage--> codec of the row's model + adapter --> pixels --> files

archive/ only stores and reads rows; this module joins them with the weights the archive carries
(archive_weights.py: its own copy, a verified local cache, or the store) and the codec.
`ArchiveDecoder.get` is what `Archive.get` used to be; `write_outputs` names, encodes and writes
output files for a list of ids (an id per file, or DICOM files rebuilt whole).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Iterator

import fsspec
import numpy as np

from ..archive.dicom_export import export_dicom_file, file_ids
from ..archive.reader import ROW_COLUMNS, Archive
from ..codec.codec import Codec
from ..codec.format import EncodedImage
from ..errors import InvalidParameterError, LowrankError
from ..images.files import image_bytes
from .archive_weights import ArchiveWeights

FORMATS = ("png", "tiff", "npy", "dicom")


class ArchiveDecoder:
    """An archive's images as pixels: each row decoded with the codec its digests name, built
    once per model and adapter from the weights the archive carries (decoding needs nothing
    installed on this machine), on `device`. Everything else an archive reads (ids, row, rows,
    failures, ...) is passed through, so DICOM export and the DICOMweb service read rows and
    frames through one object."""

    def __init__(self, archive: Archive, device: str = "cpu"):
        self.archive, self.device = archive, device
        self._codecs: dict[tuple, Codec] = {}

    @classmethod
    def open(cls, uri: str, device: str = "cpu") -> "ArchiveDecoder":
        return cls(Archive.open(uri), device)

    def ids(self) -> list[str]:
        return self.archive.ids()

    def __getattr__(self, name: str):
        """Everything else an archive reads (rows, failures, fs, root, ...) is the archive's own."""
        if name == "archive":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.archive, name)

    def __len__(self) -> int:
        return len(self.archive)

    def row(self, image_id: str, columns: list[str] | None = None, version: int | None = None) -> dict:
        return self.archive.row(image_id, columns, version)

    def encoded(self, image_id: str, preview: bool = False, version: int | None = None) -> EncodedImage:
        row = self.archive.row(image_id, ["image_id", "latent"] if preview else ROW_COLUMNS, version)
        return EncodedImage.join(row["latent"], None if preview else row["residual"])

    def codec_for(self, enc: EncodedImage) -> Codec:
        key = (enc.model_sha256, enc.adapter_sha256)
        if key not in self._codecs:
            self._codecs[key] = ArchiveWeights(self.archive.fs, self.archive.root).codec(
                enc.model_sha256, enc.adapter_sha256, self.device)
        return self._codecs[key]

    def get(self, image_id: str, preview: bool = False, version: int | None = None,
            max_side: int | None = None) -> np.ndarray:
        """The image as it was encoded (bit for bit when lossless); preview: latents only;
        `version`: an older version of a changed source (see `Archive.versions`); `max_side`: a
        preview thumbnail no larger than that, straight from the latents (fast at any size)."""
        enc = self.encoded(image_id, preview or max_side is not None, version)
        return self.codec_for(enc).decode(enc, preview=preview, max_side=max_side)

    def get_many(self, image_ids: list[str], preview: bool = False) -> list[np.ndarray]:
        """Several images, in order; those of one model and adapter through `Codec.decode_many`
        (previews of one shape share the refiner's batches)."""
        encoded = [self.encoded(i, preview) for i in image_ids]
        out: list[np.ndarray | None] = [None] * len(encoded)
        groups: dict[tuple, list[int]] = {}
        for k, enc in enumerate(encoded):
            groups.setdefault((enc.model_sha256, enc.adapter_sha256), []).append(k)
        for members in groups.values():
            codec = self.codec_for(encoded[members[0]])
            for k, array in zip(members, codec.decode_many([encoded[k] for k in members], preview=preview)):
                out[k] = array
        return out  # type: ignore[return-value]


def output_name(image_id: str, fmt: str) -> str:
    """A flat, safe file name for an id (folders and frames folded into the name)."""
    flat = image_id.replace("/", "__")
    if fmt == "dicom":  # ids are whole files here
        return flat if flat.lower().endswith((".dcm", ".dicom")) else flat + ".dcm"
    return flat.replace("#", "_frame") + "." + fmt


@dataclass(frozen=True)
class Output:
    image_id: str
    target: str  # where it was written
    shape: tuple | None  # None for DICOM files (several frames)
    dtype: str | None
    note: str = ""  # DICOM: whether the file came back byte-identical, and if not why


def check_request(fmt: str, preview: bool) -> None:
    if fmt not in FORMATS and fmt != "tif":
        raise InvalidParameterError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == "dicom" and preview:
        raise InvalidParameterError("a preview cannot be written as DICOM: it is not the archived image")


def output_ids(decoder: ArchiveDecoder, ids: list[str] | None, fmt: str) -> list[str]:
    """What gets an output file: the ids asked for (all by default); for DICOM, their files."""
    all_ids = decoder.ids()
    ids = list(ids or all_ids)
    return file_ids(all_ids, ids) if fmt == "dicom" else ids


def decode_outputs(decoder: ArchiveDecoder, ids: list[str], fmt: str, preview: bool = False,
                   failures: list[dict] | None = None, batch: int = 8) -> Iterator[tuple[str, bytes, np.ndarray | str]]:
    """(id, file bytes, pixels - or for DICOM the rebuilt file's note) for each output id, in order.
    With `failures` given, an id that cannot be decoded or written in `fmt` is appended there
    (id, error, message) and skipped; otherwise its error is raised."""
    check_request(fmt, preview)
    if fmt == "dicom":
        all_ids = decoder.ids()
        for file_id in ids:
            rebuilt = _guarded(failures, file_id, lambda: export_dicom_file(decoder, file_id, all_ids))
            if rebuilt is not None:
                yield file_id, rebuilt.data, rebuilt.note
        return
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        arrays = _guarded(None if failures is None else [], chunk[0], lambda: decoder.get_many(chunk, preview))
        if arrays is None:  # one bad image in the batch: decode one by one to name it
            arrays = [_guarded(failures, i, lambda: decoder.get(i, preview)) for i in chunk]
        for image_id, array in zip(chunk, arrays):
            if array is None:
                continue
            data = _guarded(failures, image_id, lambda: image_bytes(array, fmt, image_id))
            if data is not None:
                yield image_id, data, array


def _guarded(failures: list[dict] | None, image_id: str, call):
    if failures is None:
        return call()
    try:
        return call()
    except (LowrankError, OSError) as exc:
        failures.append({"image_id": image_id, "error": type(exc).__name__, "message": str(exc)[:500]})
        return None


def write_outputs(decoder: ArchiveDecoder, ids: list[str] | None, out: str, fmt: str | None = None,
                  preview: bool = False, failures: list[dict] | None = None,
                  folder: bool | None = None) -> Iterator[Output]:
    """Decode ids (default: all) and write them under `out` (a path or fsspec URL), yielding each
    output as it is written. One output and `out` not an existing folder: `out` is that file
    (its suffix picks the format); else `out` is a folder (made if missing) of `output_name`s.
    The folder that holds a single output file is made too."""
    fs, root = fsspec.core.url_to_fs(out)
    root = root.rstrip("/") or root
    fmt_asked = fmt
    fmt = fmt or "png"
    wanted = output_ids(decoder, ids, fmt)
    if folder is None:
        folder = len(wanted) != 1 or fs.isdir(root)
    if not folder and fmt_asked is None:
        suffix = posixpath.splitext(root)[1].lstrip(".").lower()
        fmt = suffix if suffix else fmt
    check_request("tiff" if fmt == "tif" else fmt, preview)
    target_dir = root if folder else posixpath.dirname(root)
    if target_dir:
        fs.makedirs(target_dir, exist_ok=True)
    for image_id, data, array in decode_outputs(decoder, wanted, fmt, preview, failures):
        if folder:
            target = f"{root}/{output_name(image_id, fmt)}"
        elif posixpath.splitext(root)[1] or fmt == "dicom":
            target = root
        else:
            target = f"{root}.{fmt}"
        try:
            fs.pipe_file(target, data)
        except OSError as exc:
            if failures is None:
                raise
            failures.append({"image_id": image_id, "error": type(exc).__name__, "message": str(exc)[:500]})
            continue
        if isinstance(array, str):  # a DICOM file
            yield Output(image_id, target, None, None, array)
        else:
            yield Output(image_id, target, tuple(array.shape), array.dtype.name)
