"""The `lowrank-batch` command line: the entry point, `demo` and `codec`.

Archive commands (encode, decode, ls, verify, failures, runs, report) live in cli_archive.py,
weight commands (weights, adapters, train) in cli_weights.py; parsing and wiring only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import LowrankError, __version__
from .cli_archive import archive_commands
from .cli_common import encode_kwargs, mode_args
from .cli_serve import serve_commands
from .cli_weights import weights_commands


def cmd_demo(args: argparse.Namespace) -> int:
    """Archive the bundled samples with the Ray job, decode them back by id, print the table."""
    from .demo import DemoOptions, run_demo

    kw = encode_kwargs(args)
    return run_demo(DemoOptions(kw["mode"], kw["max_error"], kw["quality"], args.model, args.adapter, args.out))


def cmd_codec_encode(args: argparse.Namespace) -> int:
    from . import Codec
    from .images import read_image

    codec = Codec.load(model=args.model, adapter=args.adapter)
    array = read_image(args.input)
    enc = codec.encode(array, args.bits, rank=args.rank, **encode_kwargs(args))
    blob = enc.to_bytes()
    Path(args.output).write_bytes(blob)
    print(f"{args.input}: {array.shape} {array.dtype} -> {args.output}: {len(blob)} bytes, "
          f"{8 * len(blob) / (array.shape[0] * array.shape[1]):.3f} bpp, PSNR {enc.psnr:.2f} dB")
    return 0


def cmd_codec_decode(args: argparse.Namespace) -> int:
    from . import EncodedImage
    from .images import write_image

    enc = EncodedImage.from_bytes(Path(args.input).read_bytes())
    from .pipeline.archive_weights import ArchiveWeights

    # the model and adapter it records, by digest: the local store, else the shipped weights
    codec = ArchiveWeights().codec(enc.model_sha256, enc.adapter_sha256)
    out = codec.decode(enc, preview=args.preview)
    write_image(args.output, out)
    print(f"{args.input} -> {args.output}: {out.shape} {out.dtype}" + (" (preview)" if args.preview else ""))
    return 0



def cmd_warmup(args: argparse.Namespace) -> int:
    from .warmup import warm_up

    warm_up(args.model)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowrank-batch", description="Low-rank latent image archiving.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="archive the bundled samples with the Ray job and decode them back")
    mode_args(demo)
    demo.add_argument("--out", default=None, help="keep the sources, the archive and the decoded images here")
    demo.set_defaults(func=cmd_demo)

    codec = sub.add_parser("codec", help="encode/decode one image file with the codec alone")
    codec_sub = codec.add_subparsers(dest="codec_command", required=True)
    enc = codec_sub.add_parser("encode", help="IMAGE (png/tiff/npy) -> encoded file")
    enc.add_argument("input", help="image file: PNG, TIFF, JPEG, DICOM, NIfTI or .npy")
    enc.add_argument("output", help="encoded file to write")
    enc.add_argument("--bits", type=int, required=True, help="bits stored per sample (8-16)")
    enc.add_argument("--rank", type=int, default=None,
                     help="latents kept per patch (default: all the model has when lossy, its preview rank "
                          "otherwise); fewer: smaller, blurrier latents")
    mode_args(enc)
    enc.set_defaults(func=cmd_codec_encode)
    dec = codec_sub.add_parser("decode", help="encoded file -> IMAGE (png/tiff/npy)")
    dec.add_argument("input", help="encoded file (from codec encode)")
    dec.add_argument("output", help="image file to write: .png, .tiff or .npy")
    dec.add_argument("--preview", action="store_true", help="latents only (fast lossy preview)")
    dec.set_defaults(func=cmd_codec_decode)

    warm = sub.add_parser("warmup", help="compile the codec's kernels into numba's cache (make does this at "
                                         "install), so the first decode takes ~0.2 s, not ~8-25 s")
    warm.add_argument("--model", default=None, help="installed model NAME[@VERSION] or a model file (default: shipped)")
    warm.set_defaults(func=cmd_warmup)

    archive_commands(sub)
    weights_commands(sub)
    serve_commands(sub)
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


