"""The training corpus: real images from installed packages, gathered into a folder with a manifest.

    corpus/
      manifest.json          sources (file, SHA-256), per image: modality, bits, split
      images/0000_ct_693_UNCR.dcm.npy ...

Modalities are the adapters' names: ct, mr, xray (CR/DX), natural. Every image is split by
columns: the rightmost quarter (whole 16-pixel patches) is the validation region, never seen
in training. That keeps a held-out split even for modalities with a single source image
(xray: pydicom-data's RG3 only, since RG1 is reserved for independent evaluation). Sampling
augments with the 8 flips/rotations of a crop (samples.py), which matters where a modality
has few images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..devcorpus import CorpusImage, dicom_frames as _dicom_frames, nifti_slices as _nifti_slices, package_dir as _package_dir  # noqa: E501
from ..errors import InvalidParameterError
from ..hashing import file_sha256

MODALITIES = ("ct", "mr", "xray", "natural")
RESERVED_PREFIXES = ("RG1_", "MR2_")  # independent evaluation only (brief, GUIDE § 4)
VAL_FRACTION = 0.25
PATCH_ALIGN = 16


def _ct() -> list[CorpusImage]:
    out = list(_dicom_frames("693_UNCR.dcm", "ct")) + list(_dicom_frames("eCT_Supplemental.dcm", "ct"))
    out += list(_dicom_frames("CT_small.dcm", "ct"))
    ts = _package_dir("totalsegmentator")
    if ts:
        atlas = os.path.join(ts, "resources", "ct_brain_atlas_1mm.nii.gz")
        out += list(_nifti_slices(atlas, "ct_brain_atlas", "ct", list(range(30, 160, 10))))
    return out


def _mr() -> list[CorpusImage]:
    out = list(_dicom_frames("MR-SIEMENS-DICOM-WithOverlays.dcm", "mr"))
    out += list(_dicom_frames("emri_small.dcm", "mr", max_frames=10)) + list(_dicom_frames("MR_small.dcm", "mr"))
    nb = _package_dir("nibabel")
    if nb:
        data = os.path.join(nb, "tests", "data")
        out += list(_nifti_slices(os.path.join(data, "example4d.nii.gz"), "example4d", "mr", list(range(0, 24, 3))))
    return out


def _xray() -> list[CorpusImage]:
    return [CorpusImage(i.name, "xray", i.pixels, i.bits_stored, i.source) for i in _dicom_frames("RG3_UNCR.dcm", "cr")]


def _natural() -> list[CorpusImage]:
    from PIL import Image

    out = []
    sk = _package_dir("skimage")
    names = ["astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "horse",
             "motorcycle_left", "moon", "page", "text", "clock_motion", "color", "ihc"]
    for name in names if sk else []:
        path = os.path.join(sk, "data", f"{name}.png")
        if os.path.exists(path):
            arr = np.asarray(Image.open(path))
            if arr.ndim == 3:
                arr = arr[..., :3]
            if arr.dtype == np.bool_:
                continue
            out.append(CorpusImage(name, "natural", np.ascontiguousarray(arr), 8, path))
    pw = _package_dir("pywt")
    if pw:
        import pywt.data

        for name in ("aero", "ascent"):
            out.append(CorpusImage(name, "natural", getattr(pywt.data, name)(), 8,
                                   os.path.join(pw, "data", f"{name}.npz")))
    return out


SOURCES = {"ct": _ct, "mr": _mr, "xray": _xray, "natural": _natural}


@dataclass(frozen=True)
class CorpusEntry:
    file: str  # relative to the corpus folder
    name: str
    modality: str
    bits_stored: int
    shape: tuple[int, ...]
    val_from_col: int  # columns [0, val_from_col) train, [val_from_col, W) validation


def val_column(width: int) -> int:
    """First validation column: the rightmost quarter, on a patch boundary (0 val for tiny images)."""
    col = int(width * (1 - VAL_FRACTION)) // PATCH_ALIGN * PATCH_ALIGN
    return width if col < 2 * PATCH_ALIGN else col


def build_corpus(out: str | Path, modalities: tuple[str, ...] = MODALITIES) -> dict:
    """Write the corpus folder; returns the manifest. Deterministic: same packages, same bytes."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise InvalidParameterError(f"unknown modalities {sorted(unknown)}; choose from {', '.join(MODALITIES)}")
    entries, sources = [], {}
    for modality in modalities:
        for im in SOURCES[modality]():
            base = os.path.basename(im.source)
            if base.startswith(RESERVED_PREFIXES):
                raise InvalidParameterError(f"{base} is reserved for independent evaluation")
            rel = f"images/{len(entries):04d}_{modality}_{im.name.replace('#', '_')}.npy"
            np.save(out / rel, np.ascontiguousarray(im.pixels), allow_pickle=False)
            entries.append(CorpusEntry(rel, im.name, modality, im.bits_stored, tuple(im.pixels.shape),
                                       val_column(im.pixels.shape[1])).__dict__)
            if im.source not in sources:
                sources[im.source] = {"file": base, "sha256": file_sha256(im.source), "modality": modality}
    manifest = {"format": "lowrank-corpus-v1", "val_fraction": VAL_FRACTION,
                "reserved_excluded": list(RESERVED_PREFIXES), "sources": list(sources.values()), "images": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def load_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise InvalidParameterError(f"{folder} is not a corpus folder (no manifest.json): run jobs/build_corpus.py")
    return json.loads(path.read_text())


def load_images(folder: str | Path, modality: str | None = None) -> list[tuple[CorpusEntry, np.ndarray]]:
    folder = Path(folder)
    out = []
    for e in load_manifest(folder)["images"]:
        if modality is None or e["modality"] == modality:
            entry = CorpusEntry(**{**e, "shape": tuple(e["shape"])})
            out.append((entry, np.load(folder / entry.file, allow_pickle=False)))
    return out
