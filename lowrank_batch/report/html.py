"""index.html of a report: one self-contained page (relative image links, inline CSS, no scripts)."""

from __future__ import annotations

import math
from html import escape

CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:4px 0}
h2{border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:1.6em}.note{color:#666;font-size:0.9em}"""


def _num(v, fmt="{:.3f}") -> str:
    if v is None:
        return "∞" if fmt == "psnr" else "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return ("{:.2f}" if fmt == "psnr" else fmt).format(v)


def _table(headers: list[str], rows: list[list], left: int = 1) -> str:
    head = "".join(f"<th{' class=l' if i < left else ''}>{escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i < left else ''}>{escape(str(c))}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(report: dict) -> str:
    s = report["summary"]
    figs = report["figures"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lowrank-batch report</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Archive quality report</h1><p class=note>{escape(report['archive'])} · generated "
             f"{escape(report['generated_at'])} · {report['seconds']} s</p>",
             "<h2>Summary</h2>",
             _table(["", "value"], [["images", s["images"]], ["failures on record", s["failures"]],
                                    ["modalities", ", ".join(s["modalities"])], ["modes", ", ".join(s["modes"])],
                                    ["bytes in (raw)", s["bytes_in"]], ["bytes out (coded)", s["bytes_out"]],
                                    ["ratio", _num(s["ratio"])]]),
             "<h3>Per mode and modality</h3>",
             _table(["mode", "modality", "images", "bytes in", "bytes out", "ratio"],
                    [[g["mode"], g["modality"], g["images"], g["bytes_in"], g["bytes_out"], _num(g["ratio"])]
                     for g in s["groups"]], left=2)]
    for key, label in (("ratio_distribution", "compression ratio"), ("psnr_distribution", "PSNR (dB)")):
        d = s[key]
        if d:
            parts.append(f"<h3>Distribution of {label}</h3>" + _table(
                ["n", "mean", "min", "p5", "p25", "median", "p75", "p95", "max"],
                [[d["n"]] + [_num(d[k]) for k in ("mean", "min", "p5", "p25", "median", "p75", "p95", "max")]], 0))
    parts.append(f"<img src='{figs['ratio_hist']}' alt='ratio histogram'> "
                 f"<img src='{figs['psnr_hist']}' alt='PSNR histogram'>")
    parts.append("<h2>Rate–distortion on the sampled images</h2>")
    if figs["rd"]:
        parts.append("<p class=note>Points pooled over the sampled images of each modality (bytes over pixels; "
                     "PSNR of the pixel-weighted mean error). Baselines " +
                     ("computed on the same pixels with imagecodecs." if report["baselines"] else
                      "not computed (add --baselines).") + "</p>")
        for m, name in figs["rd"].items():
            parts.append(f"<h3>{escape(m)}</h3><img src='{name}' alt='rate-distortion {escape(m)}'>")
            rows = [[c, p["setting"], _num(p["bpp"]), _num(p["psnr"], "psnr")]
                    for c, pts in report["rd"][m].items() for p in pts]
            parts.append(_table(["codec", "setting", "bpp", "PSNR dB"], rows, left=2))
    else:
        parts.append("<p>No sampled image had a readable source to compare with.</p>")
    parts.append("<h2>Sample images</h2><p class=note>Original, preview (latents only), full decode and the "
                 "error map, shown with the DICOM window when the file has one, else the 0.5–99.5 percentile "
                 "window; MONOCHROME1 shown inverted as a viewer would.</p>")
    for image_id, name in figs["samples"].items():
        parts.append(f"<h3>{escape(image_id)}</h3><img src='{name}' alt='{escape(image_id)}'>")
    parts.append("<h2>Worst images</h2><h3>By compression ratio</h3>" + _table(
        ["image", "modality", "mode", "ratio", "bpp", "PSNR dB"],
        [[w["image_id"], w["modality"], w["mode"], _num(w["ratio"]), _num(w["bpp"]), _num(w["psnr"], "psnr")]
         for w in s["worst_by_ratio"]], left=3))
    if s["worst_by_psnr"]:
        parts.append("<h3>By PSNR</h3>" + _table(
            ["image", "modality", "mode", "ratio", "bpp", "PSNR dB"],
            [[w["image_id"], w["modality"], w["mode"], _num(w["ratio"]), _num(w["bpp"]), _num(w["psnr"], "psnr")]
             for w in s["worst_by_psnr"]], left=3))
    parts.append("<h2>Failures</h2>")
    if report["failures"]:
        parts.append(_table(["image", "stage", "error", "message"],
                            [[f["image_id"], f["stage"], f["error"], f["message"]] for f in report["failures"]], 4))
    else:
        parts.append("<p>None on record.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
