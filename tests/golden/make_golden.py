"""(Re)generate the golden files: encoded bytes of small images in every mode, with their sources.

    PYTHONPATH=. python -m tests.golden.make_golden [--version N]

Writes tests/golden/v{N}/<case>.lrbi (the encoded image), <case>.src.npy (the source pixels),
<case>.out.npy (what decode gave at generation time: the exact pixels for lossless and
near-lossless, the refined float output for lossy and preview) and manifest.json (parameters,
digests, the model's SHA-256). Files of a released format version are never regenerated:
they are what archives written by that release contain, and tests/test_golden.py keeps them
decoding forever. Run this only to add the files of a NEW format version.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _smooth(rng, h, w, bits, channels=None):
    yy, xx = np.mgrid[0:h, 0:w]
    maxval = (1 << bits) - 1
    base = 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + 0.15 * (xx > w // 2)
    img = base * maxval + rng.normal(0, maxval * 0.01, (h, w))
    if channels:
        img = np.stack([img * (0.8 + 0.1 * c) for c in range(channels)], axis=2)
    return np.clip(np.rint(img), 0, maxval).astype(np.int64)


def sources(version: int = 1) -> dict[str, tuple[np.ndarray, int]]:
    """Small deterministic images covering bit depths, signedness, channels and sparse histograms."""
    rng = np.random.default_rng(20261204)
    out = {}
    out["u8_gray"] = (_smooth(rng, 40, 48, 8).astype(np.uint8), 8)
    out["u8_rgb"] = (_smooth(rng, 32, 40, 8, channels=3).astype(np.uint8), 8)
    out["u12_gray"] = (_smooth(rng, 48, 40, 12).astype(np.uint16), 12)
    out["u16_gray"] = (_smooth(rng, 36, 44, 16).astype(np.uint16), 16)
    ct = _smooth(rng, 40, 40, 12) - 2048  # signed CT-like values
    out["i13_signed"] = (ct.astype(np.int16), 13)
    # a sparse histogram (every 7th value of a 12-bit range): coded as indices ("remap")
    sparse = (_smooth(rng, 40, 36, 12) // 7 * 7).astype(np.uint16)
    out["u12_sparse"] = (sparse, 12)
    if version >= 3:
        # CT-like: padding far below a dense body range (remap coded as runs)
        padded = _smooth(rng, 48, 48, 8)  # a dense body range
        yy, xx = np.mgrid[0:48, 0:48]
        padded[(yy - 24) ** 2 + (xx - 24) ** 2 > 20 ** 2] = -2000
        out["i13_padded"] = (padded.astype(np.int16), 13)
        # tall enough to be cut into strips when strip_pixels is small (per-case config)
        out["u12_strips"] = (_smooth(rng, 200, 40, 12).astype(np.uint16), 12)
    if version >= 4:
        # noise that grows with intensity: intensity bands (their cases keep any that save bits)
        yy, xx = np.mgrid[0:96, 0:96]
        mean = 200 + 3500 * (xx / 95.0) ** 2 * (0.6 + 0.4 * np.cos(yy / 9.0))
        counts = np.clip(np.rint(mean + rng.normal(0, 1, mean.shape) * mean * 0.03), 0, 4095)
        out["u12_bands"] = (counts.astype(np.uint16), 12)
        # interpolated 2x (every other pixel an average): the linear predictor per position parity
        small = _smooth(rng, 49, 49, 12) + rng.integers(-40, 41, (49, 49))
        up = np.zeros((97, 97), dtype=np.int64)
        up[::2, ::2] = small
        up[1::2, ::2] = (up[:-2:2, ::2] + up[2::2, ::2]) // 2
        up[:, 1::2] = (up[:, :-2:2] + up[:, 2::2]) // 2
        out["u12_upsampled"] = (np.clip(up[:96, :96], 0, 4095).astype(np.uint16), 12)
    if version >= 6:
        # an interpolated radiograph-like plane, tall enough for several strips (parity restarts)
        yy, xx = np.mgrid[0:97, 0:81]
        mean = 20 + 3800 * (xx / 80.0) ** 3
        small = np.rint(np.clip(mean + rng.normal(0, 1, mean.shape) * np.sqrt(mean) * 0.3, 0, 4095)).astype(np.int64)
        up = np.zeros((193, 161), dtype=np.int64)
        up[::2, ::2] = small
        up[1::2, ::2] = (up[:-2:2, ::2] + up[2::2, ::2]) // 2
        up[:, 1::2] = (up[:, :-2:2] + up[:, 2::2]) // 2
        out["u12_upsampled_tall"] = (up[:192, :160].astype(np.uint16), 12)
    return out


def cases(version: int = 1) -> list[dict]:
    """(source, mode, parameters) combinations; every mode appears on several sources."""
    out = []
    for name in sources(version):
        out.append({"case": f"{name}_lossless", "source": name, "mode": "lossless"})
    if version >= 3:  # several strips per plane; "config" overrides the manifest's encoder settings
        out[-1]["config"] = {"strip_pixels": 1024}
        out.append({"case": "u12_strips_near2", "source": "u12_strips", "mode": "near-lossless", "max_error": 2,
                    "config": {"strip_pixels": 1024}})
    if version >= 4:  # intensity bands on a small plane (per-case config)
        bands = {"band_min_pixels": 1024, "band_min_gain": 0.0}
        next(c for c in out if c["source"] == "u12_bands")["config"] = bands
        out.append({"case": "u12_bands_near1", "source": "u12_bands", "mode": "near-lossless", "max_error": 1,
                    "config": {**bands, "strip_pixels": 2048}})
    if version >= 5:  # planes that carry their own predictor weights (off the format's defaults)
        own = {"predictor_weights": [13, 12, 12, 12, 12, 12, 12, 20, 20, 24]}
        out.append({"case": "u12_gray_own_weights", "source": "u12_gray", "mode": "lossless", "config": own})
        out.append({"case": "u8_rgb_own_weights_near1", "source": "u8_rgb", "mode": "near-lossless",
                    "max_error": 1, "config": own})
    if version >= 6:  # the interpolated planes' parity contexts: near-lossless, and in 3 strips
        out.append({"case": "u12_upsampled_near1", "source": "u12_upsampled", "mode": "near-lossless",
                    "max_error": 1})
        next(c for c in out if c["source"] == "u12_upsampled_tall")["config"] = {"strip_pixels": 8192}
    for name in ("u8_gray", "u12_gray", "i13_signed", "u8_rgb", "u16_gray"):
        for delta in (1, 2):
            out.append({"case": f"{name}_near{delta}", "source": name, "mode": "near-lossless", "max_error": delta})
    for name in ("u8_gray", "u12_gray", "u8_rgb", "i13_signed"):
        out.append({"case": f"{name}_lossy", "source": name, "mode": "lossy", "quality": 40.0})
    for name in ("u12_gray", "u8_rgb"):
        out.append({"case": f"{name}_preview", "source": name, "mode": "lossless", "preview": True})
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generate(version: int) -> None:
    from lowrank_batch import Codec
    from lowrank_batch.codec import pixels

    base = Codec.load()
    folder = HERE / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    srcs = sources(version)
    entries = []
    for spec in cases(version):
        array, bits = srcs[spec["source"]]
        codec = Codec(base.model, dataclasses.replace(base.config, **spec.get("config", {})))
        enc = codec.encode(array, bits, mode=spec["mode"], max_error=spec.get("max_error"),
                           quality=spec.get("quality"), format_version=version)
        blob = enc.to_bytes()
        assert blob[4] == version, f"encoder wrote version {blob[4]}, asked for {version}"
        preview = bool(spec.get("preview"))
        out = codec.decode(enc, preview=preview)
        np.save(folder / f"{spec['case']}.src.npy", array)
        np.save(folder / f"{spec['case']}.out.npy", out)
        (folder / f"{spec['case']}.lrbi").write_bytes(blob)
        recon = codec._decode_latents(enc)  # the integer latent reconstruction: exact anywhere
        entries.append({
            **spec, "bits_stored": bits, "format_version": version, "bytes_sha256": _sha(blob),
            "encoded_bytes": len(blob), "model_sha256": enc.model_sha256, "pixel_sha256": enc.pixel_sha256,
            "decoded_sha256": enc.decoded_sha256, "latent_recon_sha256": pixels.pixel_sha256(recon),
        })
    config = ({"preview_rank": base.config.preview_rank, "preview_step": base.config.preview_step} if version < 3
              else dataclasses.asdict(base.config))
    manifest = {"format_version": version, "model_sha256": base.model.sha256, "config": config, "cases": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(entries)} golden cases to {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, required=True, help="format version to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing version's files")
    args = parser.parse_args()
    if (HERE / f"v{args.version}" / "manifest.json").exists() and not args.force:
        raise SystemExit(f"golden files of version {args.version} exist: released files are never regenerated")
    generate(args.version)


if __name__ == "__main__":
    main()
