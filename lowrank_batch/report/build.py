"""`lowrank-batch report`: numbers from the archive, analyses of sampled images, figures, HTML.

The per-image analysis (decode full and preview, re-read the source, our RD points and the
baselines) runs in-process, or as Ray tasks in the cluster at `address` (the decode jobs' pool).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

from ..archive.reader import Archive
from ..pipeline.decoding import ArchiveDecoder
from . import figures, html, rd
from .baselines import baseline_points, imagecodecs
from .samples import analyse, pick_sample
from .stats import ROW_COLUMNS, image_stats, summary


def analyse_image(archive_uri: str, image_id: str, stats: dict, baselines: bool) -> dict:
    """Everything a report needs of one sampled image (runs locally or as a Ray task)."""
    decoder = ArchiveDecoder.open(archive_uri)
    result = analyse(decoder, image_id, stats)
    original = result["arrays"]["original"]
    if original is not None:
        codec = decoder.codec_for(decoder.encoded(image_id))
        points = rd.our_points(codec, original, stats["bits_stored"])
        if baselines:
            points += baseline_points(original, stats["bits_stored"])
        result["rd_points"] = points
    return result


def build_report(archive_uri: str, out: str | Path, sample: int = 8, baselines: bool = False,
                 address: str | None = None, progress=print) -> dict:
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if baselines:
        imagecodecs()  # fail before any work when imagecodecs is missing
    archive = Archive.open(archive_uri)
    images = [image_stats(r) for r in archive.rows(ROW_COLUMNS)]
    images.sort(key=lambda im: im["image_id"])
    failures = archive.failures()
    stats = {im["image_id"]: im for im in images}
    picked = pick_sample(images, sample)
    progress(f"report: {len(images)} images, {len(failures)} failures; analysing {len(picked)} samples")
    analyses = _run(archive_uri, picked, stats, baselines, address, progress)

    figs: dict = {"samples": {}, "rd": {}}
    for image_id, result in zip(picked, analyses):
        name = f"sample_{len(figs['samples']):03d}.png"
        figs["samples"][image_id] = figures.side_by_side(out / name, image_id, result["arrays"], result["numbers"])
    per_modality: dict[str, list] = {}
    for image_id, result in zip(picked, analyses):
        if "rd_points" in result:
            shape = stats[image_id]["shape"]
            per_modality.setdefault(stats[image_id]["modality"], []).append((shape[0] * shape[1], result["rd_points"]))
    rd_curves = {m: rd.pooled(v) for m, v in sorted(per_modality.items())}
    for m, curves in rd_curves.items():
        figs["rd"][m] = figures.rd_plot(out / f"rd_{m}.png", m, curves)
    figs["ratio_hist"] = figures.histogram(out / "hist_ratio.png", [im["ratio"] for im in images],
                                           "compression ratio (raw / coded)", "compression ratio per image", log=True)
    figs["psnr_hist"] = figures.histogram(out / "hist_psnr.png", [im["psnr"] for im in images],
                                          "PSNR (dB) recorded at encode", "PSNR per image (lossy and near-lossless)")
    report = {
        "archive": archive_uri, "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": summary(images, failures), "images": images, "failures": failures,
        "samples": [r["numbers"] for r in analyses], "rd": rd_curves, "figures": figs,
        "baselines": baselines, "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(_finite(report), indent=1, default=str, allow_nan=False))
    (out / "index.html").write_text(html.page(report))
    progress(f"report written to {out / 'index.html'} in {report['seconds']} s")
    return report


def _run(archive_uri, picked, stats, baselines, address, progress) -> list[dict]:
    if address is None:
        results = []
        for k, image_id in enumerate(picked, 1):
            results.append(analyse_image(archive_uri, image_id, stats[image_id], baselines))
            progress(f"  {k}/{len(picked)} {image_id}")
        return results
    from ..ray_session import start_ray

    ray = start_ray(address)
    task = ray.remote(num_cpus=1)(analyse_image)
    refs = [task.remote(archive_uri, i, stats[i], baselines) for i in picked]
    results = []
    for k, ref in enumerate(refs, 1):
        results.append(ray.get(ref))
        progress(f"  {k}/{len(picked)} {picked[k - 1]}")
    return results


def _finite(value):
    """JSON has no infinity: an exact (lossless) PSNR is written as null."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
