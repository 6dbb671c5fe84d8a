"""The `lowrank-batch` command line: parsing and wiring only."""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path


from . import Codec, EncodedImage, LowrankError
from .errors import InvalidParameterError
from .weights.defaults import DEFAULT_ADAPTER_SHA256
from .codec import metrics
from .images import read_image, write_image


def _mode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["lossless", "near-lossless", "lossy"], default="lossless")
    p.add_argument("--max-error", type=int, default=None, help="near-lossless: max |error| per pixel")
    p.add_argument("--quality", type=float, default=None, help="lossy: nominal PSNR in dB (default 45)")
    p.add_argument("--model", default=None, help="installed model NAME[@VERSION] or a model file (default: shipped)")
    p.add_argument("--adapter", default=None,
                   help="installed adapter NAME bound to the model (shipped: ct, mr, xray, natural); "
                        "encode jobs also take 'auto' (by DICOM Modality, then --adapter-rule)")


def _encode_kwargs(args: argparse.Namespace) -> dict:
    mode = args.mode
    if mode == "near-lossless" and args.max_error is None:
        args.max_error = 1
    return {"mode": mode, "max_error": args.max_error, "quality": args.quality}


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
    kwargs = _encode_kwargs(args)
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
    enc = codec.encode(array, args.bits, rank=args.rank, **_encode_kwargs(args))
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


def _print_entries(entries, with_base: bool) -> None:
    if not entries:
        print("(none installed)")
        return
    head = f"{'name':20} {'ver':>3} {'sha256':64} {'bytes':>9} {'architecture':16} {'installed at':25}"
    print(head + (" base" if with_base else ""))
    for e in entries:
        line = f"{e.name:20} {e.version:>3} {e.sha256} {e.size:>9} {e.architecture:16} {e.installed_at:25}"
        print(line + (f" {e.base_name} ({e.base_sha256[:12]})" if with_base else ""))


def cmd_store(args: argparse.Namespace) -> int:
    """weights/adapters install|list|verify|remove."""
    from .weights.install import install_adapter, install_model
    from .weights.store import WeightStore

    store, kind = WeightStore(), args.kind
    if args.action == "install" and kind == "models":
        entry = install_model(store, args.src, args.name, args.sha256)
        print(f"installed model {entry.ref} sha256 {entry.sha256} ({entry.size} bytes) into {store.root}")
    elif args.action == "install":
        entry = install_adapter(store, args.src, args.base, args.name, args.sha256)
        print(f"installed adapter {entry.ref} sha256 {entry.sha256} ({entry.architecture}), "
              f"bound to model {entry.base_name} ({entry.base_sha256})")
    elif args.action == "list":
        _print_entries(store.entries(kind), with_base=kind == "adapters")
    elif args.action == "verify":
        results = store.verify(kind, args.name)
        for entry, problem in results:
            print(f"{entry.ref:24} {entry.sha256[:16]}  {'ok' if problem is None else 'FAILED: ' + problem}")
        bad = sum(problem is not None for _, problem in results)
        print(f"{len(results) - bad} ok, {bad} failed")
        return 1 if bad else 0
    elif args.action == "remove":
        for e in store.remove(kind, args.name):
            print(f"removed {kind[:-1]} {e.ref} ({e.sha256})")
    if args.action == "install" and not args.sha256:
        print(f"pin it with: --sha256 {entry.source_sha256}")
    return 0


def _store_commands(sub, command: str, kind: str) -> None:
    p = sub.add_parser(command, help=f"install, list, verify and remove {kind} in the weight store ($LOWRANK_HOME)")
    actions = p.add_subparsers(dest="action", required=True)
    install = actions.add_parser("install", help="SRC: a local path or an fsspec URL (s3://, gs://, file://, ...)")
    install.add_argument("src")
    install.add_argument("--name", default=None)
    install.add_argument("--sha256", default=None, help="expected digest: checked before anything is visible")
    if kind == "adapters":
        install.add_argument("--base", required=True, help="the installed model this adapter was made for")
    actions.add_parser("list")
    verify = actions.add_parser("verify", help="re-hash the blobs")
    verify.add_argument("name", nargs="?")
    remove = actions.add_parser("remove")
    remove.add_argument("name")
    p.set_defaults(func=cmd_store, kind=kind)


def cmd_encode(args: argparse.Namespace) -> int:
    from .pipeline.job import JobOptions, run_encode
    from .pipeline.adapter_choice import parse_rules
    from .pipeline.worker import EncodeSettings

    kw = _encode_kwargs(args)
    settings = EncodeSettings(kw["mode"], kw["max_error"], kw["quality"], args.model, args.adapter,
                              parse_rules(args.adapter_rule))
    options = JobOptions(args.address, args.workers, args.gpus_per_worker, args.batch_size, args.prune)
    try:
        summary = run_encode(args.src, args.dst, settings, options)
    except LowrankError:
        raise
    except Exception as exc:  # the job itself failed: exit 2, whatever the cause (schedulers rely on it)
        print(f"lowrank-batch: encode job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    ratio = f"{summary['ratio']:.3f}" if summary["ratio"] else "-"
    print(f"encoded {summary['encoded']}, skipped {summary['skipped']}, failed {summary['failed']}; "
          f"{summary['bytes_in']} -> {summary['bytes_out']} bytes (ratio {ratio}), "
          f"{summary['megapixels_per_second']:.2f} MP/s, {summary['seconds']:.1f} s; run {summary['run_id']}")
    if summary["adapters"] and set(summary["adapters"]) != {"none"}:
        print("  adapters: " + ", ".join(f"{n} {c}" for n, c in sorted(summary["adapters"].items())))
    for note in summary["notes"]:
        print(f"  note: {note}")
    for f in summary["failures"]:
        print(f"  failed {f['image_id']} [{f['stage']}] {f['error']}: {f['message']}")
    if summary["gone"]:
        print(f"  {summary['gone']} archived images have no source any more" +
              (" (pruned)" if summary["pruned"] else " (kept; --prune removes them)"))
    return 1 if summary["failed"] else 0


def cmd_failures(args: argparse.Namespace) -> int:
    from .archive import Archive

    failures = Archive.open(args.archive).failures()
    for f in failures:
        print(f"{f['time']}\t{f['run_id']}\t{f['image_id']}\t{f['stage']}\t{f['error']}\t{f['message']}")
    print(f"{len(failures)} open failures")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import fsspec

    fs, root = fsspec.core.url_to_fs(args.archive)
    paths = sorted(fs.glob(f"{root.rstrip('/')}/runs/*.json"))
    for path, raw in (fs.cat(paths) if paths else {}).items():
        r = json.loads(raw)
        print(f"{r['run_id']}\tencoded {r['encoded']}\tskipped {r['skipped']}\tfailed {r['failed']}\t"
              f"gone {r.get('gone', 0)}\t{r['bytes_in']} -> {r['bytes_out']} B\t{r['seconds']:.1f} s")
    print(f"{len(paths)} runs")
    return 0


def _output_path(out: Path, image_id: str, fmt: str, many: bool) -> Path:
    if not many:
        return out
    return out / (image_id.replace("/", "__").replace("#", "_frame") + "." + fmt)


def cmd_decode(args: argparse.Namespace) -> int:
    from .archive import Archive

    archive = Archive.open(args.archive)
    ids = args.id or archive.ids()
    if args.format == "dicom":
        if args.preview:
            raise InvalidParameterError("--preview cannot be written as DICOM: a preview is not the archived image")
        return _decode_dicom_files(archive, ids, Path(args.out))
    many = len(ids) > 1 or Path(args.out).is_dir()
    out = Path(args.out)
    if many:
        out.mkdir(parents=True, exist_ok=True)
    fmt = args.format or (out.suffix.lstrip(".") if not many and out.suffix else "png")
    for image_id in ids:
        array = archive.get(image_id, preview=args.preview)
        target = _output_path(out, image_id, fmt, many)
        if not many and not target.suffix:
            target = target.with_suffix("." + fmt)
        write_image(target, array)
        print(f"{image_id} -> {target} {array.shape} {array.dtype}" + (" (preview)" if args.preview else ""))
    return 0


def _decode_dicom_files(archive, ids: list[str], out: Path) -> int:
    """DICOM files back: frame ids map to their file, which is rebuilt whole."""
    from .archive.dicom_export import export_dicom, file_ids

    all_ids = archive.ids()
    files = file_ids(all_ids, ids)
    many = len(files) > 1 or out.is_dir()
    if many:
        out.mkdir(parents=True, exist_ok=True)
    for file_id in files:
        target = out / _dicom_name(file_id) if many else out
        target.write_bytes(export_dicom(archive, file_id, all_ids))
        print(f"{file_id} -> {target} (DICOM)")
    return 0


def _dicom_name(file_id: str) -> str:
    flat = file_id.replace("/", "__")
    return flat if flat.lower().endswith((".dcm", ".dicom")) else flat + ".dcm"


def cmd_ls(args: argparse.Namespace) -> int:
    from .archive import Archive

    archive = Archive.open(args.archive)
    for row in sorted(archive.rows(["shape", "mode", "encoded_bytes", "psnr"]), key=lambda r: r["image_id"]):
        psnr = "inf" if row["psnr"] is None else f"{row['psnr']:.2f}"
        print(f"{row['image_id']}\t{'x'.join(map(str, row['shape']))}\t{row['mode']}\t{row['encoded_bytes']}\t{psnr}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .archive import Archive

    archive = Archive.open(args.archive)
    hidden = 0
    for record, ids in archive.damaged_record_ids().items():
        hidden += len(ids)
        print(f"DAMAGED commit record {record}: its images are not listed any more "
              f"({', '.join(ids) if ids else 'its data file is unreadable too'}); the next encode run "
              "encodes their sources again")
    bad = []
    for image_id in archive.ids():
        try:
            archive.get(image_id)  # decode checks the SHA-256 (lossless) or the reconstruction digest
        except LowrankError as exc:
            bad.append(image_id)
            print(f"FAILED {image_id}: {exc}")
    print(f"{len(archive) - len(bad)} ok, {len(bad)} failed" + (f", {hidden} hidden by damaged records" if hidden else ""))
    if bad and args.repair:
        import fsspec

        from .archive.writer import write_tombstones

        fs, root = fsspec.core.url_to_fs(args.archive)
        write_tombstones(fs, root, "verify-repair", bad)
        print(f"repair: {len(bad)} damaged images unlisted; the next encode run encodes their sources again")
    return 1 if bad or archive.damaged_records else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowrank-batch", description="Low-rank latent image archiving.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="encode and decode the bundled sample images")
    _mode_args(demo)
    demo.add_argument("--out", default=None, help="also write the decoded images here")
    demo.set_defaults(func=cmd_demo)

    codec = sub.add_parser("codec", help="encode/decode one image file with the codec alone")
    codec_sub = codec.add_subparsers(dest="codec_command", required=True)
    enc = codec_sub.add_parser("encode", help="IMAGE (png/tiff/npy) -> encoded file")
    enc.add_argument("input")
    enc.add_argument("output")
    enc.add_argument("--bits", type=int, required=True, help="bits stored per sample (8-16)")
    enc.add_argument("--rank", type=int, default=None)
    _mode_args(enc)
    enc.set_defaults(func=cmd_codec_encode)
    dec = codec_sub.add_parser("decode", help="encoded file -> IMAGE (png/tiff/npy)")
    dec.add_argument("input")
    dec.add_argument("output")
    dec.add_argument("--preview", action="store_true", help="latents only (fast lossy preview)")
    dec.set_defaults(func=cmd_codec_decode)

    enc_job = sub.add_parser("encode", help="archive every image under SRC into DST (a Ray job)")
    enc_job.add_argument("src", help="folder/prefix of images or tar shards: path or fsspec URL")
    enc_job.add_argument("dst", help="archive folder/prefix: path or fsspec URL")
    _mode_args(enc_job)
    enc_job.add_argument("--address", default=None, help="Ray cluster (auto, ray://host:port); default: local")
    enc_job.add_argument("--workers", type=int, default=None)
    enc_job.add_argument("--gpus-per-worker", type=float, default=None)
    enc_job.add_argument("--batch-size", type=int, default=16, help="files per work unit")
    enc_job.add_argument("--prune", action="store_true", help="remove archived images whose source is gone")
    enc_job.add_argument("--adapter-rule", action="append", default=None, metavar="GLOB=ADAPTER",
                         help="--adapter auto: adapter for image ids matching GLOB when there is no DICOM "
                              "Modality (repeatable, first match wins; ADAPTER 'none' for none)")
    enc_job.set_defaults(func=cmd_encode)

    dec_job = sub.add_parser("decode", help="decode images from an archive by id")
    dec_job.add_argument("archive")
    dec_job.add_argument("--id", action="append", help="image id (repeatable); default: all")
    dec_job.add_argument("--out", required=True, help="file (one id) or folder")
    dec_job.add_argument("--preview", action="store_true")
    dec_job.add_argument("--format", choices=["png", "tiff", "npy", "dicom"], default=None,
                         help="dicom: rebuild each archived DICOM file (all its frames, its elements)")
    dec_job.set_defaults(func=cmd_decode)

    _archive_commands(sub)
    _store_commands(sub, "weights", "models")
    _store_commands(sub, "adapters", "adapters")
    _train_commands(sub)
    _report_command(sub)
    return parser


def _archive_commands(sub) -> None:
    """verify, ls, failures, runs: commands on an archive alone."""
    verify = sub.add_parser("verify", help="decode every image and check its checksum / bound")
    verify.add_argument("archive")
    verify.add_argument("--repair", action="store_true",
                        help="unlist damaged images so the next encode run archives them again from their sources")
    verify.set_defaults(func=cmd_verify)
    for name, func, text in (
        ("ls", cmd_ls, "one line per image: id, shape, mode, bytes, psnr"),
        ("failures", cmd_failures, "inputs that failed and are not archived since"),
        ("runs", cmd_runs, "the archive's runs with their summaries"),
    ):
        archive_cmd = sub.add_parser(name, help=text)
        archive_cmd.add_argument("archive")
        archive_cmd.set_defaults(func=func)


def _report_command(sub) -> None:
    report = sub.add_parser("report", help="quality report of an archive: index.html, figures, report.json")
    report.add_argument("archive", help="local folder or fsspec URL (s3://...)")
    report.add_argument("--out", required=True, help="folder to write")
    report.add_argument("--sample", type=int, default=8, help="images to decode and show (spread over modalities)")
    report.add_argument("--baselines", action="store_true",
                        help="also code the sampled images with JPEG 2000, JPEG-LS, HTJ2K, JPEG XL (imagecodecs)")
    report.add_argument("--address", default=None, help="run the sample analyses on this Ray cluster")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    if args.sample < 0:
        raise InvalidParameterError(f"--sample must be >= 0, got {args.sample}")
    build_report(args.archive, args.out, args.sample, args.baselines, args.address)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training.run import TrainConfig, replace, run, summary
    from .weights.defaults import default_adapter_file, default_model_file

    config = TrainConfig()
    for name in ("steps", "batch", "crop", "lr", "seed", "lora_rank", "loss"):
        if getattr(args, name) is not None:
            config = replace(config, **{name: getattr(args, name)})
    if args.kind == "base":
        out = args.out or str(default_model_file())
        report = run("base", args.corpus, out, config, address=args.address, device=args.device)
    else:
        if not args.modality:
            raise InvalidParameterError("train adapter needs --modality (ct, mr, xray or natural)")
        out = args.out or str(default_adapter_file(args.modality))
        base = args.base or str(default_model_file())
        config = config if args.steps is not None else replace(config, steps=1200)
        # adapters correct the base on one modality at the set level: big errors weigh as in an archive
        config = config if args.loss is not None else replace(config, loss="pooled")
        report = run("adapter", args.corpus, out, config, args.modality, base, args.address, args.device)
    print(summary(report))
    if Path(out).resolve() in (default_model_file(), *(default_adapter_file(m) for m in ("ct", "mr", "xray", "natural"))):
        name = "DEFAULT_MODEL_SHA256" if args.kind == "base" else f"DEFAULT_ADAPTER_SHA256[{args.modality!r}]"
        print(f"the shipped file changed: pin {name} = {report['sha256']!r} in lowrank_batch/weights/defaults.py"
              + (" (and retrain the adapters: they are bound to the base)" if args.kind == "base" else ""))
    return 0


def _train_commands(sub) -> None:
    train = sub.add_parser("train", help="train the base codec or a per-modality LoRA adapter")
    train.add_argument("kind", choices=["base", "adapter"])
    train.add_argument("--modality", choices=["ct", "mr", "xray", "natural"], default=None)
    train.add_argument("--corpus", default="corpus", help="corpus folder (built from installed packages if missing)")
    train.add_argument("--base", default=None, help="adapter: the base model file (default: the shipped one)")
    train.add_argument("--out", default=None, help="weight file to write (default: the shipped file)")
    train.add_argument("--steps", type=int, default=None, help="optimiser steps (base 4000, adapter 1200)")
    train.add_argument("--batch", type=int, default=None)
    train.add_argument("--crop", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--lora-rank", dest="lora_rank", type=int, default=None)
    train.add_argument("--loss", choices=["per-pair", "pooled"], default=None,
                       help="per-pair: mean per-crop dB gain (base default); pooled: the set's gain per "
                            "quality (adapter default)")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    train.add_argument("--address", default=None, help="run on this Ray cluster as one task (GPU if any)")
    train.set_defaults(func=cmd_train)


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


