"""Numbers of a report, from the archive's rows alone (pure functions; no decoding)."""

from __future__ import annotations

import json
import math

import numpy as np

DICOM_MODALITY = {"CT": "ct", "MR": "mr", "CR": "xray", "DX": "xray", "DR": "xray", "MG": "xray", "US": "us"}
ROW_COLUMNS = ["image_id", "source_uri", "shape", "bits_stored", "mode", "max_error", "psnr", "encoded_bytes",
               "metadata_json", "adapter_sha256"]


def modality_of(meta: dict) -> str:
    """ct / mr / xray / us from the DICOM Modality, 'volume' for NIfTI, else 'other'."""
    if meta.get("format") == "DICOM":
        return DICOM_MODALITY.get(str(meta.get("Modality", "")).upper(), "other")
    if meta.get("format") == "NIfTI":
        return "volume"
    return "other"


def image_stats(row: dict) -> dict:
    """One archived image: raw and coded bytes, ratio, bpp, recorded PSNR."""
    meta = json.loads(row.get("metadata_json") or "{}")
    shape = list(row["shape"])
    pixels = shape[0] * shape[1]
    samples = pixels * (shape[2] if len(shape) == 3 else 1)
    raw = samples * ((row["bits_stored"] + 7) // 8)
    return {"image_id": row["image_id"], "modality": modality_of(meta), "mode": row["mode"],
            "shape": shape, "bits_stored": row["bits_stored"], "max_error": row["max_error"],
            "raw_bytes": raw, "encoded_bytes": row["encoded_bytes"], "ratio": raw / row["encoded_bytes"],
            "bpp": 8 * row["encoded_bytes"] / pixels, "psnr": row["psnr"],  # None: lossless (exact)
            "adapter_sha256": row.get("adapter_sha256"), "source_uri": row["source_uri"]}


def summary(images: list[dict], failures: list[dict]) -> dict:
    """Totals, per mode and modality, distributions, worst images."""
    groups: dict[str, dict] = {}
    for im in images:
        key = f"{im['mode']}/{im['modality']}"
        g = groups.setdefault(key, {"mode": im["mode"], "modality": im["modality"], "images": 0,
                                    "bytes_in": 0, "bytes_out": 0})
        g["images"] += 1
        g["bytes_in"] += im["raw_bytes"]
        g["bytes_out"] += im["encoded_bytes"]
    for g in groups.values():
        g["ratio"] = g["bytes_in"] / g["bytes_out"] if g["bytes_out"] else None
    bytes_in = sum(im["raw_bytes"] for im in images)
    bytes_out = sum(im["encoded_bytes"] for im in images)
    ratios = [im["ratio"] for im in images]
    psnrs = [im["psnr"] for im in images if im["psnr"] is not None and math.isfinite(im["psnr"])]
    by_ratio = sorted(images, key=lambda im: im["ratio"])[:10]
    by_psnr = sorted((im for im in images if im["psnr"] is not None), key=lambda im: im["psnr"])[:10]
    return {
        "images": len(images), "failures": len(failures),
        "modalities": sorted({im["modality"] for im in images}), "modes": sorted({im["mode"] for im in images}),
        "bytes_in": bytes_in, "bytes_out": bytes_out, "ratio": bytes_in / bytes_out if bytes_out else None,
        "groups": [groups[k] for k in sorted(groups)],
        "ratio_distribution": distribution(ratios), "psnr_distribution": distribution(psnrs),
        "worst_by_ratio": [_short(im) for im in by_ratio], "worst_by_psnr": [_short(im) for im in by_psnr],
    }


def distribution(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [0, 5, 25, 50, 75, 95, 100])
    return {"n": len(a), "mean": float(a.mean()), **{k: float(v) for k, v in
                                                    zip(("min", "p5", "p25", "median", "p75", "p95", "max"), q)}}


def _short(im: dict) -> dict:
    return {k: im[k] for k in ("image_id", "modality", "mode", "ratio", "bpp", "psnr")}
