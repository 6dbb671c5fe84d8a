"""Entry point for `ray job submit --working-dir . -- python jobs/encode.py SRC DST [options]`.

Same options as `lowrank-batch encode` (which itself joins the cluster named by RAY_ADDRESS, as
`ray job submit` sets it, so `ray job submit -- lowrank-batch encode SRC DST` works as well).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowrank_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
