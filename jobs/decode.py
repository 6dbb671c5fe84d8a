"""Decode an archive (or some ids) to a folder or bucket as a Ray job.

    python jobs/decode.py ARCHIVE --out OUT [--id ID ...] [--format png|tiff|npy|dicom] [--preview] [--address auto]

OUT is a folder or bucket prefix, made if missing. `--out` as in `lowrank-batch decode`; a
positional OUT is still accepted.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowrank_batch.pipeline.decode_job import run_decode  # noqa: E402
from lowrank_batch.pipeline.job import JobOptions  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archive")
    p.add_argument("out", nargs="?", help="(older form of --out)")
    p.add_argument("--out", dest="out_option", default=None, help="folder or bucket prefix to write into")
    p.add_argument("--id", action="append")
    p.add_argument("--format", default="png", choices=["png", "tiff", "npy", "dicom"])
    p.add_argument("--preview", action="store_true")
    p.add_argument("--address", default="auto" if "RAY_ADDRESS" in os.environ else None)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    out = args.out_option or args.out
    if not out or (args.out_option and args.out and args.out_option != args.out):
        p.error("give the output folder once: --out OUT")
    summary = run_decode(args.archive, out, args.id, args.format, args.preview,
                         JobOptions(args.address, args.workers, 0))
    print(f"decoded {summary['decoded']}, failed {summary['failed']} in {summary['seconds']:.1f} s")
    for f in summary["failures"]:
        print(f"  failed {f['image_id']}: {f['error']}: {f['message']}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
