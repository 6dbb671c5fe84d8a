"""The sampled images of a report: decoded (full and preview), compared with their sources.

The original comes from the image's source URI when it is still readable (the same file the
job read, decoded the same way); when it is gone, a lossless image's full decode stands in for
it (its SHA-256 was checked at decode), and other modes report what needs no original.
"""

from __future__ import annotations

import json

import numpy as np

from ..codec import metrics
from ..pipeline.reading import read_original


def pick_sample(images: list[dict], n: int) -> list[str]:
    """Up to n ids, spread over modalities (round robin) and over each modality's sorted ids."""
    by_mod: dict[str, list[str]] = {}
    for im in sorted(images, key=lambda im: im["image_id"]):
        by_mod.setdefault(im["modality"], []).append(im["image_id"])
    picked: list[str] = []
    queues = {m: _spread(ids, n) for m, ids in sorted(by_mod.items())}
    while len(picked) < n and any(queues.values()):
        for m in sorted(queues):
            if queues[m] and len(picked) < n:
                picked.append(queues[m].pop(0))
    return picked


def _spread(ids: list[str], n: int) -> list[str]:
    if len(ids) <= n:
        return list(ids)
    step = len(ids) / n
    return [ids[int(k * step)] for k in range(n)]


def original_of(image_id: str, source_uri: str) -> np.ndarray | None:
    """The source image again, if its file is still there and still reads to this id."""
    image = read_original(image_id, source_uri)
    return None if image is None else image.pixels


def display_window(meta: dict, pixels: np.ndarray) -> tuple[float, float]:
    """(low, high) grey levels to display: the DICOM window when present, else 0.5-99.5 percentiles."""
    dicom = meta.get("dicom_json") or {}
    centre, width = dicom.get("00281050", {}).get("Value"), dicom.get("00281051", {}).get("Value")
    if centre and width:
        c, w = float(centre[0]), float(width[0])
        slope = float((dicom.get("00281053", {}).get("Value") or [1])[0])
        intercept = float((dicom.get("00281052", {}).get("Value") or [0])[0])
        # the window is in rescaled units (HU for CT); stored values = (v - intercept) / slope
        lo, hi = (c - 0.5 - (w - 1) / 2 - intercept) / slope, (c - 0.5 + (w - 1) / 2 - intercept) / slope
        if hi > lo:
            return float(lo), float(hi)
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    return float(lo), float(max(hi, lo + 1))


def analyse(decoder, image_id: str, stats: dict) -> dict:
    """Decode one image (full and preview), compare with its original; arrays for the figures.
    `decoder` is a decode.ArchiveDecoder."""
    row = decoder.row(image_id, ["image_id", "metadata_json"])
    meta = json.loads(row["metadata_json"] or "{}")
    full = decoder.get(image_id)
    preview = decoder.get(image_id, preview=True)
    original = original_of(image_id, stats["source_uri"])
    have_original = original is not None and original.shape == full.shape
    if not have_original:
        original = full if stats["mode"] == "lossless" else None
    bits = stats["bits_stored"]
    out = {"image_id": image_id, "modality": stats["modality"], "mode": stats["mode"],
           "original_from": "source" if have_original else ("lossless decode" if original is not None else None),
           "window": display_window(meta, full),
           "monochrome1": meta.get("PhotometricInterpretation") == "MONOCHROME1"}
    if original is not None:
        out["full"] = _quality(original, full, bits)
        out["preview"] = _quality(original, preview, bits)
    else:
        out["preview_vs_decode"] = _quality(full, preview, bits)
    arrays = {"original": original, "preview": preview, "full": full}
    return {"numbers": out, "arrays": arrays}


def _quality(reference: np.ndarray, test: np.ndarray, bits: int) -> dict:
    psnr = metrics.psnr(reference, test, bits)
    return {"psnr": None if not np.isfinite(psnr) else float(psnr), "ssim": float(metrics.ssim(reference, test, bits)),
            "max_error": int(metrics.max_abs_error(reference, test))}
