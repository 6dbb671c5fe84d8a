"""Train the base codec or one modality's LoRA adapter (same as `lowrank-batch train`).

    python jobs/train.py base    [--corpus corpus] [--out FILE] [--steps N] [--address RAY]
    python jobs/train.py adapter --modality ct|mr|xray|natural [--base FILE] [--out FILE] ...

Defaults write the shipped files under lowrank_batch/weights/default/. Seeded: the same
command on the same corpus gives the same weights (to float tolerance on CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowrank_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
