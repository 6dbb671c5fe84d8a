"""Gather the training corpus from installed packages into a folder with a manifest.

    python jobs/build_corpus.py [--out corpus] [--modalities ct,mr,xray,natural]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowrank_batch.training.corpus import MODALITIES, build_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("corpus"))
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    args = parser.parse_args()
    manifest = build_corpus(args.out, tuple(args.modalities.split(",")))
    counts = Counter(e["modality"] for e in manifest["images"])
    print(f"wrote {args.out}: {len(manifest['images'])} images from {len(manifest['sources'])} source files "
          f"({', '.join(f'{m} {n}' for m, n in sorted(counts.items()))})")


if __name__ == "__main__":
    main()
