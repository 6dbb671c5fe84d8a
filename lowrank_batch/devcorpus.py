"""The dev corpus: real images that installed packages ship (pydicom-data, TotalSegmentator,
nibabel, scikit-image).

Each item is a `CorpusImage` (name, modality, pixel array, bits_stored). Nothing is
downloaded; a source whose package is missing is skipped with a note, never faked.
pydicom-data's RG1_* and MR2_* files are held out for independent evaluation and are
only returned by `heldout_images()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class CorpusImage:
    name: str
    modality: str  # ct | mr | cr | natural
    pixels: np.ndarray
    bits_stored: int
    source: str  # file the pixels came from


def dicom_frames(filename: str, modality: str, max_frames: int = 4) -> Iterator[CorpusImage]:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(filename)
    if path is None:
        return
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = arr if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else arr[None]
    for i, frame in enumerate(frames[:max_frames]):
        suffix = f"#{i}" if len(frames) > 1 else ""
        yield CorpusImage(f"{filename}{suffix}", modality, np.ascontiguousarray(frame), int(ds.BitsStored), path)


def nifti_slices(path: str, name: str, modality: str, axis_slices: list[int]) -> Iterator[CorpusImage]:
    import nibabel

    if not os.path.exists(path):
        return
    img = nibabel.load(path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    for z in axis_slices:
        if z >= data.shape[2]:
            continue
        sl = np.ascontiguousarray(np.rot90(data[:, :, z]))
        if sl.dtype.kind == "f":
            continue
        bits = 16 if sl.dtype.itemsize >= 2 else 8
        yield CorpusImage(f"{name}#{z}", modality, sl, bits, path)


def package_dir(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return os.path.dirname(mod.__file__)


def dev_images(modalities: tuple[str, ...] = ("ct", "mr", "cr", "natural")) -> list[CorpusImage]:
    """The images we develop and benchmark on (never the held-out RG1/MR2)."""
    out: list[CorpusImage] = []
    if "ct" in modalities:
        out += dicom_frames("693_UNCR.dcm", "ct")
        out += dicom_frames("eCT_Supplemental.dcm", "ct")
        out += dicom_frames("CT_small.dcm", "ct")
        ts = package_dir("totalsegmentator")
        if ts:
            atlas = os.path.join(ts, "resources", "ct_brain_atlas_1mm.nii.gz")
            out += nifti_slices(atlas, "ct_brain_atlas", "ct", [60, 90, 120])
    if "mr" in modalities:
        out += dicom_frames("MR-SIEMENS-DICOM-WithOverlays.dcm", "mr")
        out += dicom_frames("emri_small.dcm", "mr", max_frames=2)
        out += dicom_frames("MR_small.dcm", "mr")
        nb = package_dir("nibabel")
        if nb:
            out += nifti_slices(os.path.join(nb, "tests", "data", "example4d.nii.gz"), "example4d", "mr", [0, 1])
    if "cr" in modalities:
        out += dicom_frames("RG3_UNCR.dcm", "cr")
    if "natural" in modalities:
        sk = package_dir("skimage")
        if sk:
            from PIL import Image

            for name in ["camera", "coffee", "astronaut", "brick", "moon", "chelsea"]:
                path = os.path.join(sk, "data", f"{name}.png")
                if os.path.exists(path):
                    arr = np.asarray(Image.open(path))
                    if arr.ndim == 3:
                        arr = np.ascontiguousarray(arr[..., :3])
                    out.append(CorpusImage(name, "natural", arr, 8, path))
    return out


def heldout_images() -> list[CorpusImage]:
    """Independent evaluation only: never use these to fit or tune anything."""
    out: list[CorpusImage] = []
    out += dicom_frames("RG1_UNCR.dcm", "cr")
    out += dicom_frames("MR2_UNCR.dcm", "mr")
    return out


def raw_bytes(img: CorpusImage) -> int:
    """Stored size as GUIDE § 5 counts it: ceil(bits_stored / 8) bytes per sample."""
    return img.pixels.size * ((img.bits_stored + 7) // 8)


def source_manifest(images: list[CorpusImage]) -> list[dict]:
    """Files behind the images, with their SHA-256, for a model's training manifest."""
    import hashlib

    seen: dict[str, str] = {}
    for im in images:
        if im.source not in seen:
            with open(im.source, "rb") as f:
                seen[im.source] = hashlib.sha256(f.read()).hexdigest()
    return [{"file": os.path.basename(p), "sha256": d} for p, d in sorted(seen.items())]
