"""Entry point for `ray job submit --working-dir . -- python jobs/encode.py SRC DST [options]`.

Same options as `lowrank-batch encode`; joins the cluster the job runs on (address "auto")
when started by `ray job submit`, else starts a local Ray.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowrank_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "RAY_ADDRESS" in os.environ and "--address" not in args:
        args += ["--address", "auto"]
    sys.exit(main(["encode", *args]))
