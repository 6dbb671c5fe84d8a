"""The report's figures (matplotlib, Agg: files only, no display). Each function writes one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ERROR_GAIN_NOTE = "error map: |full decode − original| (colour bar in grey levels)"


def tick_label(value: float, _pos=None) -> str:
    """A log-axis tick as a plain number with the digits it needs: 0.02, 0.5, 1, 20.

    ScalarFormatter gave every tick of an axis one number of decimals, so below 0.1 bpp the
    ticks 0.02 and 0.05 both read "0.0" (seen in the report on CR/DX/MR/CT archives)."""
    return f"{value:.3g}"


def plain_log_ticks(ax) -> None:
    """Log axes labelled 0.05, 0.5, 1, 2 rather than 5x10^-1 (and no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(tick_label))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=96, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _display(img: np.ndarray, window: tuple[float, float], monochrome1: bool) -> np.ndarray:
    """Medical windowing to [0, 1] (MONOCHROME1 inverted, as a viewer shows it); colour as is."""
    if img.ndim == 3:
        return np.clip(img.astype(np.float64) / max(1.0, float(img.max())), 0, 1)
    lo, hi = window
    out = np.clip((img.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1)
    return 1 - out if monochrome1 else out


def quality_text(q: dict) -> str:
    psnr = "PSNR ∞ (exact)" if q["psnr"] is None else f"PSNR {q['psnr']:.2f} dB"
    return f"{psnr}, SSIM {q['ssim']:.4f}, max err {q['max_error']}"


def side_by_side(path: Path, image_id: str, arrays: dict, numbers: dict) -> str:
    """Original, preview (latents only), full decode, and the amplified error map with a colour bar."""
    window, mono1 = numbers["window"], numbers["monochrome1"]
    panels = [("original", arrays["original"]), ("preview (latents only)", arrays["preview"]),
              ("full decode", arrays["full"])]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (title, img) in zip(axes, panels):
        if img is None:
            ax.text(0.5, 0.5, "source not readable", ha="center", va="center")
        else:
            ax.imshow(_display(img, window, mono1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        q = numbers.get("preview" if title.startswith("preview") else "full") if title != "original" else None
        ax.set_title(title + ("\n" + quality_text(q) if q else ""), fontsize=9)
        ax.axis("off")
    ax = axes[3]
    if arrays["original"] is not None:
        err = np.abs(arrays["full"].astype(np.int64) - arrays["original"].astype(np.int64))
        err = err.max(axis=2) if err.ndim == 3 else err
        shown = ax.imshow(err, cmap="magma", vmin=0, vmax=max(1, int(err.max())), interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="|error| (grey levels)")
        ax.set_title(f"error map, max {int(err.max())}", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no original to compare", ha="center", va="center")
    ax.axis("off")
    fig.suptitle(image_id, fontsize=10)
    return _save(fig, path)


def rd_plot(path: Path, modality: str, curves: dict[str, list[dict]]) -> str:
    """bpp (log) against PSNR per codec; lossless points drawn on a band above the finite ones."""
    fig, ax = plt.subplots(figsize=(7, 4.6))
    finite = [p["psnr"] for pts in curves.values() for p in pts if math.isfinite(p["psnr"])]
    top = (max(finite) if finite else 60) + 3
    for codec, points in sorted(curves.items()):
        pts = sorted(points, key=lambda p: p["bpp"])
        xs = [p["bpp"] for p in pts]
        ys = [p["psnr"] if math.isfinite(p["psnr"]) else top for p in pts]
        ax.plot(xs, ys, marker="o", label=codec)
    ax.set_xscale("log")
    ax.axhline(top - 1.5, color="0.8", lw=0.8)
    # x in axes fraction, y in data units: safe on a log axis whatever its limits
    ax.text(0.01, top - 1.2, "lossless (exact) ↑", fontsize=8, color="0.4", transform=ax.get_yaxis_transform())
    plain_log_ticks(ax)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB, peak 2^bits − 1)")
    ax.set_title(f"rate–distortion, {modality}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def histogram(path: Path, values: list[float], xlabel: str, title: str, log: bool = False) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if vals:
        bins = np.geomspace(min(vals), max(vals) * 1.0001, 30) if log and min(vals) > 0 else 30
        ax.hist(vals, bins=bins, color="#4c72b0")
        if log:
            ax.set_xscale("log")
            plain_log_ticks(ax)
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    return _save(fig, path)
