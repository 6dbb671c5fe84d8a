"""`lowrank-batch warmup` fills numba's cache, so a fresh process decodes without compiling.

Checked by numba's own counters, not by time: after the warm-up, a new interpreter that
encodes and decodes an image of another size in every mode loads every kernel from the cache
(hits) and compiles none (misses). About 30-40 s on 2 busy cores (one compilation)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import json, numpy as np
from numba.core.dispatcher import Dispatcher
import lowrank_batch.codec as pkg, importlib, pkgutil
from lowrank_batch import Codec
from lowrank_batch.warmup import sample_image
codec = Codec.load()
for shape, dtype, bits in (((96, 80), np.uint16, 14), ((40, 56, 3), np.uint8, 8)):
    image = sample_image(shape, dtype, bits)
    for mode, err in (("lossless", None), ("near-lossless", 3), ("lossy", None)):
        for version in (1, 2, 3):
            enc = codec.encode(image, bits, mode, err, format_version=version)
            codec.decode(enc); codec.decode(enc, preview=True)
hits = misses = 0
for info in pkgutil.iter_modules(pkg.__path__):
    module = importlib.import_module(f"lowrank_batch.codec.{info.name}")
    for value in vars(module).values():
        if isinstance(value, Dispatcher) and value.__module__ == module.__name__:
            hits += sum(value.stats.cache_hits.values())
            misses += sum(value.stats.cache_misses.values())
print(json.dumps({"hits": hits, "misses": misses}))
"""


def _python(code: str, cache: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_after_warmup_a_fresh_process_compiles_no_kernel(tmp_path):
    cache = tmp_path / "numba-cache"
    said = _python("from lowrank_batch.cli import main; raise SystemExit(main(['warmup']))", cache)
    assert "compiled and cached" in said
    counts = json.loads(_python(CHECK, cache).strip().splitlines()[-1])
    assert counts["misses"] == 0 and counts["hits"] > 0, counts
