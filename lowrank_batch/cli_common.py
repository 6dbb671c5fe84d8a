"""What several command modules share: the mode options and their validation."""

from __future__ import annotations

import argparse


def mode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["lossless", "near-lossless", "lossy"], default="lossless")
    p.add_argument("--max-error", type=int, default=None, help="near-lossless: max |error| per pixel")
    p.add_argument("--quality", type=float, default=None, help="lossy: nominal PSNR in dB (default 45)")
    p.add_argument("--model", default=None, help="installed model NAME[@VERSION] or a model file (default: shipped)")
    p.add_argument("--adapter", default=None,
                   help="installed adapter NAME bound to the model (shipped: ct, mr, xray, natural); "
                        "encode jobs also take 'auto' (by DICOM Modality, then --adapter-rule)")


def encode_kwargs(args: argparse.Namespace) -> dict:
    mode = args.mode
    if mode == "near-lossless" and args.max_error is None:
        args.max_error = 1
    return {"mode": mode, "max_error": args.max_error, "quality": args.quality}
