"""Weights an archive carries: content-addressed blobs at <archive>/weights/sha256/<digest>.

Every model and adapter that rows of the archive name (model_sha256, adapter_sha256) is copied
here before the first commit record that references it, so any node of the job and any machine
that decodes years later reads exactly those bytes, whatever its local weight store holds.
Bytes only (no torch, no codec): a blob is checked against its name when written and when read.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import WeightsError
from .writer import put_atomic

WEIGHTS_DIR = "weights/sha256"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def blob_key(root: str, digest: str) -> str:
    if not _DIGEST.fullmatch(digest or ""):  # a name from a row: never a path of its own
        raise WeightsError(f"not a SHA-256 digest: {digest!r}")
    return f"{root.rstrip('/')}/{WEIGHTS_DIR}/{digest}"


def put_blob(fs, root: str, digest: str, data: bytes) -> bool:
    """Publish `data` as blob `digest` (one PUT or a rename); False when an intact copy is there
    already. Refuses bytes that do not hash to their name."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise WeightsError(f"weights to ship as {digest} hash to {actual}; nothing was written")
    key = blob_key(root, digest)
    if fs.exists(key) and read_blob(fs, root, digest, missing_ok=True) is not None:
        return False
    put_atomic(fs, key, data)
    return True


def read_blob(fs, root: str, digest: str, missing_ok: bool = False) -> bytes | None:
    """The verified bytes of blob `digest`; None when the archive does not carry it and
    missing_ok (archives written before weights travelled with them). A blob whose bytes do not
    hash to its name is an error when read, never used; with missing_ok it counts as missing."""
    key = blob_key(root, digest)
    try:
        with fs.open(key, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise WeightsError(f"the archive at {root} carries no weights {digest} ({key} is missing)") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        if missing_ok:
            return None
        raise WeightsError(f"weights {key} hash to {actual}, not {digest}: the archive's copy is damaged")
    return data


def carried(fs, root: str) -> list[str]:
    """Digests of the weights the archive carries (one listing)."""
    try:
        paths = fs.glob(f"{root.rstrip('/')}/{WEIGHTS_DIR}/*")
    except FileNotFoundError:
        return []
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in paths]
    return sorted(n for n in names if _DIGEST.fullmatch(n))
