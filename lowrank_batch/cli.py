"""The `lowrank-batch` command line: the entry point, `demo` and `codec`.

Archive commands (encode, decode, ls, verify, failures, runs, report) live in cli_archive.py,
weight commands (weights, adapters, train) in cli_weights.py; parsing and wiring only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

from . import Codec, EncodedImage, LowrankError
from .cli_archive import archive_commands
from .cli_common import encode_kwargs, mode_args
from .cli_weights import weights_commands
from .codec import metrics
from .images import read_image, write_image
from .weights.defaults import DEFAULT_ADAPTER_SHA256


DEMO_ADAPTERS = {"ct": "ct", "mr": "mr", "cr": "xray", "natural": "natural"}  # sample modality -> shipped adapter


def cmd_demo(args: argparse.Namespace) -> int:
    """Encode the bundled samples, decode them back, print sizes and quality."""
    from .pipeline.adapter_choice import measured_worse

    auto = args.adapter in (None, "auto")
    base = Codec.load(model=args.model, adapter=None if auto else args.adapter)
    codecs: dict[str, Codec] = {}
    samples = resources.files("lowrank_batch") / "samples"
    manifest = json.loads((samples / "manifest.json").read_text())
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = encode_kwargs(args)
    print(f"lowrank-batch demo: mode={args.mode}" + (f" max_error={args.max_error}" if args.max_error else ""))
    header = f"{'image':22} {'shape':>11} {'bits':>4} {'raw B':>9} {'coded B':>9} {'ratio':>6} {'bpp':>6} " \
             f"{'PSNR dB':>8} {'maxerr':>6} {'prev dB':>7} {'enc ms':>7} {'dec ms':>7} adapter"
    print(header)
    total_raw = total_coded = 0
    failures = 0
    for item in manifest:
        array = read_image(samples / item["file"])
        bits = int(item["bits_stored"])
        adapter = DEMO_ADAPTERS.get(item["modality"]) if auto and args.model is None else None
        adapter = adapter if adapter in DEFAULT_ADAPTER_SHA256 else None
        if adapter not in codecs:
            codecs[adapter] = Codec(base.model, base.config, base.device) if adapter else base
            if adapter:
                codecs[adapter].use_adapter(adapter)  # the shipped one, installed on first use
                if measured_worse(codecs[adapter].adapter_provenance) is not None:  # as --adapter auto does
                    codecs[adapter] = base
        codec = codecs[adapter]
        adapter = adapter if codec is not base else None
        t0 = time.perf_counter()
        enc = codec.encode(array, bits, **kwargs)
        blob = enc.to_bytes()
        t1 = time.perf_counter()
        decoded = codec.decode(EncodedImage.from_bytes(blob))
        t2 = time.perf_counter()
        raw = array.size * ((bits + 7) // 8)
        err = metrics.max_abs_error(array, decoded)
        ok = (err == 0) if args.mode == "lossless" else (args.mode != "near-lossless" or err <= args.max_error)
        failures += not ok
        total_raw += raw
        total_coded += len(blob)
        shape = "x".join(map(str, array.shape))
        print(f"{item['file']:22} {shape:>11} {bits:>4} {raw:>9} {len(blob):>9} {raw / len(blob):>6.2f} "
              f"{8 * len(blob) / (array.shape[0] * array.shape[1]):>6.3f} {metrics.psnr(array, decoded, bits):>8.2f} "
              f"{err:>6} {enc.preview_psnr:>7.2f} {1e3 * (t1 - t0):>7.0f} {1e3 * (t2 - t1):>7.0f} {adapter or '-'}")
        if out_dir:
            write_image(out_dir / item["file"], decoded)
    print(f"total: {total_raw} raw bytes -> {total_coded} coded bytes, ratio {total_raw / total_coded:.3f}; "
          f"{'all checks passed' if not failures else f'{failures} images FAILED their bound'}")
    return 0 if not failures else 1


def cmd_codec_encode(args: argparse.Namespace) -> int:
    codec = Codec.load(model=args.model, adapter=args.adapter)
    array = read_image(args.input)
    enc = codec.encode(array, args.bits, rank=args.rank, **encode_kwargs(args))
    blob = enc.to_bytes()
    Path(args.output).write_bytes(blob)
    print(f"{args.input}: {array.shape} {array.dtype} -> {args.output}: {len(blob)} bytes, "
          f"{8 * len(blob) / (array.shape[0] * array.shape[1]):.3f} bpp, PSNR {enc.psnr:.2f} dB")
    return 0


def cmd_codec_decode(args: argparse.Namespace) -> int:
    enc = EncodedImage.from_bytes(Path(args.input).read_bytes())
    codec = Codec.for_image(enc)  # the model and adapter it records, from the store
    out = codec.decode(enc, preview=args.preview)
    write_image(args.output, out)
    print(f"{args.input} -> {args.output}: {out.shape} {out.dtype}" + (" (preview)" if args.preview else ""))
    return 0



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowrank-batch", description="Low-rank latent image archiving.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="encode and decode the bundled sample images")
    mode_args(demo)
    demo.add_argument("--out", default=None, help="also write the decoded images here")
    demo.set_defaults(func=cmd_demo)

    codec = sub.add_parser("codec", help="encode/decode one image file with the codec alone")
    codec_sub = codec.add_subparsers(dest="codec_command", required=True)
    enc = codec_sub.add_parser("encode", help="IMAGE (png/tiff/npy) -> encoded file")
    enc.add_argument("input")
    enc.add_argument("output")
    enc.add_argument("--bits", type=int, required=True, help="bits stored per sample (8-16)")
    enc.add_argument("--rank", type=int, default=None)
    mode_args(enc)
    enc.set_defaults(func=cmd_codec_encode)
    dec = codec_sub.add_parser("decode", help="encoded file -> IMAGE (png/tiff/npy)")
    dec.add_argument("input")
    dec.add_argument("output")
    dec.add_argument("--preview", action="store_true", help="latents only (fast lossy preview)")
    dec.set_defaults(func=cmd_codec_decode)

    archive_commands(sub)
    weights_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LowrankError as exc:
        print(f"lowrank-batch: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())


