"""Rendered frames (WADO-RS /rendered): the Modality LUT (rescale), the DICOM VOI window
(PS3.3 C.11.2.1.2) and MONOCHROME1 inversion, to 8-bit PNG or JPEG. Pure."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT or SIGMOID


def parse_window(value: str) -> Window:
    """The `window=center,width,function` query parameter; ValueError when malformed."""
    parts = value.split(",")
    if len(parts) != 3:
        raise ValueError("window must be center,width,function")
    center, width = float(parts[0]), float(parts[1])
    function = parts[2].strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or not width > 0 or not np.isfinite(center):
        raise ValueError("window function must be linear, linear_exact or sigmoid, with width > 0")
    return Window(center, width, function)


def _first_number(dataset: dict, tag: str) -> float | None:
    values = (dataset.get(tag) or {}).get("Value") or []
    try:
        return float(values[0]) if values else None
    except (TypeError, ValueError):
        return None


def window_of(dataset: dict) -> Window | None:
    """The first VOI window the instance declares (WindowCenter/Width), if any."""
    center, width = _first_number(dataset, "00281050"), _first_number(dataset, "00281051")
    if center is None or width is None or width <= 0:
        return None
    fn = ((dataset.get("00281056") or {}).get("Value") or ["LINEAR"])[0]
    return Window(center, width, str(fn).upper() if str(fn).upper() in ("LINEAR", "LINEAR_EXACT", "SIGMOID")
                  else "LINEAR")


def to_display(pixels: np.ndarray, dataset: dict, photometric: str, window: Window | None = None) -> np.ndarray:
    """8-bit display values of one frame."""
    if pixels.ndim == 3:  # colour: already display values; 16-bit colour scaled down
        bits = int(_first_number(dataset, "00280101") or 8)
        return (pixels >> max(0, bits - 8)).astype(np.uint8) if pixels.dtype != np.uint8 else pixels
    slope = _first_number(dataset, "00281053") or 1.0
    intercept = _first_number(dataset, "00281052") or 0.0
    x = pixels.astype(np.float64) * slope + intercept
    w = window or window_of(dataset)
    if w is None:  # no window on record: the frame's own range
        lo, hi = float(x.min()), float(x.max())
        w = Window((lo + hi) / 2 + 0.5, max(hi - lo + 1, 2), "LINEAR")
    c, width = w.center, w.width
    if w.function == "SIGMOID":
        y = 255.0 / (1 + np.exp(-4 * (x - c) / width))
    elif w.function == "LINEAR_EXACT":
        y = np.clip((x - c) / width + 0.5, 0, 1) * 255.0
    else:
        width = max(width, 1.0)
        y = np.where(x <= c - 0.5 - (width - 1) / 2, 0.0,
                     np.where(x > c - 0.5 + (width - 1) / 2, 255.0,
                              ((x - (c - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255.0))
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return 255 - y if photometric == "MONOCHROME1" else y


def encode_image(display: np.ndarray, media_type: str, quality: int | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(display)
    if media_type == "image/png":
        image.save(buf, format="PNG", compress_level=1)  # fast: a viewer waits for it
    else:
        image.save(buf, format="JPEG", quality=quality or 90)
    return buf.getvalue()
