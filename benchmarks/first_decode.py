"""First decode in a fresh environment, before and after `lowrank-batch warmup`.

Each measurement runs in a new interpreter with its own empty numba cache ($NUMBA_CACHE_DIR),
as a fresh install has: cold = decode straight away (the kernels compile on first call);
warmed = `warmup` first (another process), then the decode. Prints JSON.

    python -m benchmarks.first_decode
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ENCODE = """
import numpy as np, sys
from lowrank_batch import Codec
from lowrank_batch.warmup import sample_image
enc = Codec.load().encode(sample_image((512, 512), np.uint16, 12), 12)
open(sys.argv[1], 'wb').write(enc.to_bytes())
"""
DECODE = """
import json, sys, time
from pathlib import Path
from lowrank_batch import Codec, EncodedImage
enc = EncodedImage.from_bytes(Path(sys.argv[1]).read_bytes())
codec = Codec.for_image(enc)
t0 = time.perf_counter(); codec.decode(enc); t1 = time.perf_counter(); codec.decode(enc); t2 = time.perf_counter()
print(json.dumps({"first_decode_s": t1 - t0, "second_decode_s": t2 - t1}))
"""


def _run(code: str, *args: str, cache: str) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        image = f"{tmp}/512.lrbi"
        _run(ENCODE, image, cache=f"{tmp}/encode-cache")
        cold = json.loads(_run(DECODE, image, cache=f"{tmp}/cold"))
        _run("from lowrank_batch.warmup import warm_up; warm_up(log=lambda *_: None)", cache=f"{tmp}/warm")
        warm = json.loads(_run(DECODE, image, cache=f"{tmp}/warm"))
    result = {"image": "512x512 12-bit lossless", "cold": cold, "after_warmup": warm}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
