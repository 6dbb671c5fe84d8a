"""One-thread lossless encode/decode time of one CT slice and one large radiograph, vs OpenJPEG.

The issue-15 speed figures: the 512x512 12-bit CT (693_UNCR.dcm, decode by id must stay
<= 100 ms warm) and the 3.6 MP RG1 radiograph (held out: timed only, never tuned on), each
with the whole codec (`Codec.encode` / `Codec.decode` of the serialised bytes) and the
OpenJPEG reversible round trip (imagecodecs, numthreads=1). Best of --repeat runs, warm.

    python -m benchmarks.decode_speed [--repeat 3] [--threads 1,2] [--format-version N]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import imagecodecs as ic  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lowrank_batch import Codec, EncodedImage  # noqa: E402
from lowrank_batch.devcorpus import dev_images, heldout_images  # noqa: E402
from lowrank_batch.report import baselines  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _decode_kwargs(codec: Codec, threads: int) -> dict:
    # a `threads` knob exists only once intra-image parallelism is in
    import inspect

    return {"threads": threads} if "threads" in inspect.signature(codec.decode).parameters else {}


def measure(codec: Codec, name: str, pixels: np.ndarray, bits: int, repeat: int, threads: list[int],
            version: int | None = None) -> dict:
    kw = {} if version is None else {"format_version": version}
    blob = codec.encode(pixels, bits, **kw).to_bytes()
    enc_s = _best(lambda: codec.encode(pixels, bits, **kw).to_bytes(), repeat)
    row = {"image": name, "shape": list(pixels.shape), "format": blob[4], "bytes": len(blob), "encode_s": enc_s}
    for n in threads:
        kwargs = _decode_kwargs(codec, n)
        out = codec.decode(EncodedImage.from_bytes(blob), **kwargs)
        assert np.array_equal(out, pixels), "lossless round trip failed"
        row[f"decode_s_{n}t" if kwargs else "decode_s"] = _best(
            lambda: codec.decode(EncodedImage.from_bytes(blob), **kwargs), repeat)
    a = baselines.as_unsigned(pixels, bits)
    j2k = ic.jpeg2k_encode(a, level=0, reversible=True, bitspersample=bits, numthreads=1)
    row["j2k_encode_s"] = _best(lambda: ic.jpeg2k_encode(a, level=0, reversible=True, bitspersample=bits,
                                                          numthreads=1), repeat)
    row["j2k_decode_s"] = _best(lambda: ic.jpeg2k_decode(j2k, numthreads=1), repeat)
    dec = row.get("decode_s", row.get("decode_s_1t"))
    row["encode_vs_j2k"] = row["j2k_encode_s"] / enc_s
    row["decode_vs_j2k"] = row["j2k_decode_s"] / dec
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="1", help="decode thread counts to time, e.g. 1,2")
    parser.add_argument("--format-version", type=int, default=None, help="encode this format version")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(1)
    codec = Codec.load()
    ct = next(im for im in dev_images(("ct",)) if im.name.startswith("693_UNCR"))
    rg1 = heldout_images()[0]
    codec.decode(codec.encode(ct.pixels[:64, :64], ct.bits_stored))  # compile / load numba kernels
    rows = [measure(codec, im.name, im.pixels, im.bits_stored, args.repeat, threads, args.format_version)
            for im in (ct, rg1)]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
