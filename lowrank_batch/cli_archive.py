"""`lowrank-batch` commands on archives: encode and decode jobs, ls, verify, failures, runs, report."""

from __future__ import annotations

import argparse
import json
import sys

from . import LowrankError
from .cli_common import encode_kwargs, mode_args
from .errors import InvalidParameterError


LS_COLUMNS = ["shape", "mode", "encoded_bytes", "psnr"]  # psnr None: exact (lossless)
SHOWN_FAILURES = 50  # on the terminal; the run record (runs/RUN_ID.json) keeps every one


def cmd_encode(args: argparse.Namespace) -> int:
    from .pipeline.adapter_choice import parse_rules
    from .pipeline.job import JobOptions, run_encode
    from .pipeline.worker import EncodeSettings

    kw = encode_kwargs(args)
    # both validate as they are built: a bad option fails here, before Ray starts
    settings = EncodeSettings(kw["mode"], kw["max_error"], kw["quality"], args.model, args.adapter,
                              parse_rules(args.adapter_rule))
    options = JobOptions(args.address, args.workers, args.gpus_per_worker, args.batch_size, args.prune,
                         storage_retry_seconds=args.storage_retry_seconds,
                         resource_wait_seconds=args.wait_for_resources)
    try:
        summary = run_encode(args.src, args.dst, settings, options)
    except LowrankError:
        raise
    except Exception as exc:  # the job itself failed: exit 2, whatever the cause (schedulers rely on it)
        print(f"lowrank-batch: encode job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary, args.dst)
    if summary.run_record_error:  # the images above are committed; only the run's own record is missing
        print(f"lowrank-batch: {summary.run_record_error}", file=sys.stderr)
        return 2
    return 1 if summary.failed else 0


def _print_summary(summary, dst: str) -> None:
    ratio = f"{summary.ratio:.3f}" if summary.ratio else "-"
    print(f"encoded {summary.encoded}, skipped {summary.skipped}, failed {summary.failed}; "
          f"{summary.bytes_in} -> {summary.bytes_out} bytes (ratio {ratio}), "
          f"{summary.megapixels_per_second:.2f} MP/s, {summary.seconds:.1f} s; run {summary.run_id}")
    if summary.adapters and set(summary.adapters) != {"none"}:
        print("  adapters: " + ", ".join(f"{n} {c}" for n, c in sorted(summary.adapters.items())))
    for note in summary.notes:
        print(f"  note: {note}")
    for f in summary.failures[:SHOWN_FAILURES]:
        print(f"  failed {f.image_id} [{f.stage}] {f.error}: {f.message}")
    if len(summary.failures) > SHOWN_FAILURES:
        print(f"  ... and {len(summary.failures) - SHOWN_FAILURES} more; the run record "
              f"{dst.rstrip('/')}/runs/{summary.run_id}.json lists every one")
    if summary.gone:
        print(f"  {summary.gone} archived images have no source any more" +
              (" (pruned)" if summary.pruned else " (kept; --prune removes them)"))
    if summary.storage_retries:
        print(f"  {summary.storage_retries} reads/writes were retried after transient storage errors")


def _print_json(value) -> None:
    """One JSON document on stdout (for schedulers and scripts)."""
    print(json.dumps(value, indent=1, sort_keys=True, allow_nan=False))


def cmd_failures(args: argparse.Namespace) -> int:
    from .archive import Archive

    failures = Archive.open(args.archive).failures()
    if args.json:
        _print_json({"archive": args.archive, "failures": failures})
        return 0
    for f in failures:
        print(f"{f['time']}\t{f['run_id']}\t{f['image_id']}\t{f['stage']}\t{f['error']}\t{f['message']}")
    print(f"{len(failures)} open failures")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .archive.layout import read_run_records

    runs = read_run_records(args.archive)
    if args.json:
        _print_json({"archive": args.archive, "runs": runs})
        return 0
    for r in runs:
        print(f"{r['run_id']}\tencoded {r['encoded']}\tskipped {r['skipped']}\tfailed {r['failed']}\t"
              f"gone {r.get('gone', 0)}\t{r['bytes_in']} -> {r['bytes_out']} B\t{r['seconds']:.1f} s")
    print(f"{len(runs)} runs")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from .pipeline.decoding import ArchiveDecoder, write_outputs

    decoder = ArchiveDecoder.open(args.archive)
    for out in write_outputs(decoder, args.id, args.out, args.format, args.preview):
        if out.shape is None:
            print(f"{out.image_id} -> {out.target} (DICOM: {out.note})")
        else:
            print(f"{out.image_id} -> {out.target} {out.shape} {out.dtype}" + (" (preview)" if args.preview else ""))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from .archive import Archive

    archive = Archive.open(args.archive)
    rows = sorted(archive.rows(LS_COLUMNS), key=lambda r: r["image_id"])
    if args.json:
        _print_json({"archive": args.archive, "images": [{k: r[k] for k in ["image_id", *LS_COLUMNS]} for r in rows]})
        return 0
    for row in rows:
        psnr = "inf" if row["psnr"] is None else f"{row['psnr']:.2f}"
        print(f"{row['image_id']}\t{'x'.join(map(str, row['shape']))}\t{row['mode']}\t{row['encoded_bytes']}\t{psnr}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .archive.dicom_export import kept_files, verify_dicom_file
    from .pipeline.decoding import ArchiveDecoder

    decoder = ArchiveDecoder.open(args.archive)
    archive = decoder.archive
    hidden = 0
    for record, ids in archive.damaged_record_ids().items():
        hidden += len(ids)
        print(f"DAMAGED commit record {record}: its images are not listed any more "
              f"({', '.join(ids) if ids else 'its data file is unreadable too'}); the next encode run "
              "encodes their sources again")
    bad = []
    all_ids = archive.ids()
    dicom_files = kept_files(archive, all_ids)
    in_files = {i for ids in dicom_files.values() for i in ids}
    for image_id in all_ids:
        if image_id in in_files:
            continue
        try:
            decoder.get(image_id)  # decode checks the SHA-256 (lossless) or the reconstruction digest
        except LowrankError as exc:
            bad.append(image_id)
            print(f"FAILED {image_id}: {exc}")
    for file_id, ids in dicom_files.items():  # the pixels, then the file's own bytes
        try:
            verify_dicom_file(decoder, file_id, all_ids, [decoder.get(i) for i in ids])
        except LowrankError as exc:
            bad += ids  # a file is given back whole or not at all: --repair re-encodes all of it
            print(f"FAILED {file_id}: {exc}")
    hidden_note = f", {hidden} hidden by damaged records" if hidden else ""
    print(f"{len(archive) - len(bad)} ok, {len(bad)} failed{hidden_note}")
    if bad and args.repair:
        from .archive.layout import write_tombstones

        write_tombstones(archive.fs, archive.root, "verify-repair", bad)
        print(f"repair: {len(bad)} damaged images unlisted; the next encode run encodes their sources again")
    return 1 if bad or archive.damaged_records else 0




def cmd_compact(args: argparse.Namespace) -> int:
    from .archive.maintenance import compact

    if args.target_rows < 1:
        raise InvalidParameterError(f"--target-rows must be >= 1, got {args.target_rows}")
    r = compact(args.archive, target_rows=args.target_rows)
    print(f"compacted {r.rows_moved} rows from small files into {r.files_written} new files "
          f"({r.files_before} data files held live rows before); `vacuum` deletes the old files after the retention")
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    from .archive.maintenance import parse_duration, vacuum

    try:
        retention = parse_duration(args.retention)
    except ValueError as exc:
        raise InvalidParameterError(f"--retention: {exc}") from None
    r = vacuum(args.archive, retention=retention)
    print(f"expired {r.versions_expired} versions, deleted {r.files_deleted} data files "
          f"({r.bytes_deleted} bytes) and {r.checkpoints_deleted} old checkpoints")
    return 0


def _maintenance_commands(sub) -> None:
    compact = sub.add_parser("compact", help="merge small data files into bigger ones (safe beside an encode)")
    compact.add_argument("archive")
    compact.add_argument("--target-rows", type=int, default=256,
                         help="rows per new data file (default 256: each decode by id reads its file's footer)")
    compact.set_defaults(func=cmd_compact)
    vacuum = sub.add_parser("vacuum", help="drop versions superseded longer ago than the retention, "
                                           "delete data files nothing refers to")
    vacuum.add_argument("archive")
    vacuum.add_argument("--retention", default="7d",
                        help="how long superseded versions and moved-away files stay readable (7d, 12h, 0)")
    vacuum.set_defaults(func=cmd_vacuum)


def archive_commands(sub) -> None:
    """Register the archive commands on the top-level subparsers."""
    enc_job = sub.add_parser("encode", help="archive every image under SRC into DST (a Ray job)")
    enc_job.add_argument("src", help="folder/prefix of images or tar shards: path or fsspec URL")
    enc_job.add_argument("dst", help="archive folder/prefix: path or fsspec URL")
    mode_args(enc_job)
    enc_job.add_argument("--address", default=None,
                         help="Ray cluster (auto, ray://host:port); default: $RAY_ADDRESS when set "
                              "(as inside `ray job submit`), else a local Ray")
    enc_job.add_argument("--workers", type=int, default=None,
                         help="encode actors (default: one per GPU, else one per CPU; what is asked of an autoscaler)")
    enc_job.add_argument("--gpus-per-worker", type=float, default=None,
                         help="GPUs each actor holds (default: 1 where GPUs are up, else 0)")
    enc_job.add_argument("--wait-for-resources", type=float, default=None, metavar="SECONDS",
                         help="autoscaling clusters: ask the autoscaler for --workers x --gpus-per-worker and "
                              "wait up to SECONDS for them (default: 900 where an autoscaler is detected, "
                              "else 0: size from what is up and fail at once if GPUs are missing)")
    enc_job.add_argument("--batch-size", type=int, default=16, help="files per work unit")
    enc_job.add_argument("--prune", action="store_true", help="remove archived images whose source is gone")
    enc_job.add_argument("--storage-retry-seconds", type=float, default=300.0,
                         help="how long reads and writes keep retrying an unreachable or failing store "
                              "before the image or unit is recorded as failed (default 300)")
    enc_job.add_argument("--adapter-rule", action="append", default=None, metavar="GLOB=ADAPTER",
                         help="--adapter auto: adapter for image ids matching GLOB when there is no DICOM "
                              "Modality (repeatable, first match wins; ADAPTER 'none' for none)")
    enc_job.set_defaults(func=cmd_encode)

    dec_job = sub.add_parser("decode", help="decode images from an archive by id")
    dec_job.add_argument("archive", help="archive folder/prefix: path or fsspec URL")
    dec_job.add_argument("--id", action="append", help="image id (repeatable); default: all")
    dec_job.add_argument("--out", required=True,
                         help="file (one id; its suffix picks the format) or folder; made if missing")
    dec_job.add_argument("--preview", action="store_true",
                         help="the latents alone (fast, lossy), without the residual")
    dec_job.add_argument("--format", choices=["png", "tiff", "npy", "dicom"], default=None,
                         help="dicom: rebuild each archived DICOM file (all its frames, its elements)")
    dec_job.set_defaults(func=cmd_decode)

    _archive_commands(sub)
    _maintenance_commands(sub)
    _report_command(sub)


def _archive_commands(sub) -> None:
    """verify, ls, failures, runs: commands on an archive alone."""
    verify = sub.add_parser("verify", help="decode every image and check its checksum / bound")
    verify.add_argument("archive", help="archive folder/prefix: path or fsspec URL")
    verify.add_argument("--repair", action="store_true",
                        help="unlist damaged images so the next encode run archives them again from their sources")
    verify.set_defaults(func=cmd_verify)
    for name, func, text in (
        ("ls", cmd_ls, "one line per image: id, shape, mode, bytes, psnr"),
        ("failures", cmd_failures, "inputs that failed and are not archived since"),
        ("runs", cmd_runs, "the archive's runs with their summaries"),
    ):
        archive_cmd = sub.add_parser(name, help=text)
        archive_cmd.add_argument("archive", help="archive folder/prefix: path or fsspec URL")
        archive_cmd.add_argument("--json", action="store_true", help="one JSON document on stdout instead of lines")
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


