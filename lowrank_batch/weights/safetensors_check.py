"""Refuse unsafe or malformed weight files before any tensor is read.

Pickle-based checkpoints (.pt/.pth/.bin/.ckpt/.pkl) can run code when loaded, so they are
refused by name and by content and never opened with a pickle loader. A safetensors header
is checked completely: length inside the file, JSON object, known dtypes, shapes, offsets
inside the data section, sizes matching shape x dtype, no overlaps.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from ..errors import WeightsError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024
CONVERT_HINT = (
    "convert it once, in an environment you trust, with: "
    "python -c \"import torch; from safetensors.torch import save_file; "
    "save_file(torch.load('IN', weights_only=True), 'OUT.safetensors')\""
)


def refuse_pickle(name: str, head: bytes) -> None:
    """Raise if `name`/`head` (the first 9+ bytes of the file) look like a pickle-based checkpoint.

    A safetensors file has "{" at byte 8 (its JSON header starts there); its 8-byte length can
    begin with the same bytes as a pickle protocol marker, so that is checked first.
    """
    lowered = name.lower()
    looks_safetensors = head[8:9] == b"{"
    is_zip = head[:4] == b"PK\x03\x04"  # torch.save's zip container holds a pickle
    is_pickle = not looks_safetensors and len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if lowered.endswith(PICKLE_SUFFIXES) or is_zip or is_pickle:
        raise WeightsError(
            f"{name}: refusing a pickle-based checkpoint (loading one can run arbitrary code); "
            f"only safetensors files are accepted — {CONVERT_HINT}"
        )


def read_header(path: str | Path, label: str | None = None) -> dict:
    """Validate a safetensors file's header and return it (tensor entries + __metadata__).

    `label` names the file in messages (the source, when `path` is a download in progress).
    """
    path = Path(path)
    label = label or path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        refuse_pickle(label, head)
        head = head[:8]
        f.seek(8)
        if len(head) < 8:
            raise WeightsError(f"{label}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise WeightsError(f"{label}: safetensors header length {n} points past the end of the file ({size} bytes)")
        raw = f.read(n)
    return check_header(raw, size - 8 - n, label)


def check_header(raw: bytes, data_size: int, name: str) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{name}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{name}: safetensors header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise WeightsError(f"{name}: safetensors __metadata__ must map strings to strings")
    spans = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        spans.append(_check_entry(name, key, entry, data_size))
    spans.sort()
    for (b0, e0, k0), (b1, e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise WeightsError(f"{name}: tensors {k0!r} and {k1!r} overlap in the data section")
    return header


def _check_entry(name: str, key: str, entry: object, data_size: int) -> tuple[int, int, str]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise WeightsError(f"{name}: tensor {key!r} has a malformed header entry")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise WeightsError(f"{name}: tensor {key!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise WeightsError(f"{name}: tensor {key!r} has an invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size):
        raise WeightsError(f"{name}: tensor {key!r} has data offsets {offsets!r} outside the file's data "
                           f"({data_size} bytes)")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise WeightsError(f"{name}: tensor {key!r} spans {offsets[1] - offsets[0]} bytes, but shape {shape} "
                           f"of {dtype} needs {expected}")
    return offsets[0], offsets[1], key
