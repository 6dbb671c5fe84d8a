"""Weights travel by digest: resolved once by the driver, shipped into the archive, loaded by
every actor (and every later decode) from the archive's copy through a verified local cache.

    driver:  names -> digests (its own store, once)  ->  DST/weights/sha256/<digest>
    actors:  digest -> local cache ($LOWRANK_HOME/blobs/sha256/<digest>, re-hashed on use)
                    -> else the archive's copy (verified, then cached) -> Codec
A node's own store is never asked for a *name*: only bytes whose SHA-256 is the digest are used,
so what a node happens to have installed cannot change which weights an image is coded with.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

from ..archive.weights import put_blob, read_blob
from ..codec.codec import Codec, CodecConfig
from ..errors import WeightsError
from ..weights.adapters import read_canonical
from ..weights.defaults import DEFAULT_ADAPTER_SHA256, DEFAULT_MODEL_SHA256
from ..weights.install import cached_model, ensure_default, ensure_default_adapter, load_adapter
from ..weights.store import WeightStore, sha256_of
from .adapter_choice import AUTO, DICOM_MODALITY_ADAPTERS, NONE


@dataclass(frozen=True)
class ResolvedWeights:
    """What the driver resolved the job's weight names to (digests only: they cross nodes)."""

    model_sha256: str
    adapter_sha256: str | None = None  # a fixed --adapter
    auto: tuple[tuple[str, str | None, str | None], ...] = ()  # --adapter auto: (name, digest, why unusable)

    def digests(self) -> list[str]:
        return [d for d in (self.model_sha256, self.adapter_sha256, *(a[1] for a in self.auto)) if d]

    def auto_digest(self, name: str) -> tuple[str | None, str | None]:
        for n, digest, why in self.auto:
            if n == name:
                return digest, why
        return None, f"no adapter {name!r} was resolved for this job"


def resolve_weights(model: str | None, adapter: str | None, rules: tuple[tuple[str, str], ...] = (),
                    store: WeightStore | None = None) -> tuple[ResolvedWeights, dict[str, Path]]:
    """Resolve the job's model and adapter names in the driver's store: (digests, digest -> local
    file to ship). Under --adapter auto every adapter auto may pick (the DICOM modalities' and the
    rules') is resolved; one that is not usable is recorded with the reason, as the workers did."""
    store = store or WeightStore()
    if model is not None and Path(model).is_file():
        model_sha, model_file = sha256_of(model), Path(model)
    else:
        entry = ensure_default(store) if model is None else store.resolve("models", str(model))
        model_sha, model_file = entry.sha256, store.blob_path(entry.sha256)
    files = {model_sha: model_file}
    fixed, auto = None, []
    if adapter == AUTO:
        names = dict.fromkeys([*DICOM_MODALITY_ADAPTERS.values(), *(a for _, a in rules if a != NONE)])
        for name in names:
            try:
                _, entry = load_adapter(store, name, model_sha)
            except WeightsError as exc:
                auto.append((name, None, str(exc)))
                continue
            auto.append((name, entry.sha256, None))
            files[entry.sha256] = store.blob_path(entry.sha256)
    elif adapter is not None:
        _, entry = load_adapter(store, adapter, model_sha)
        fixed = entry.sha256
        files[fixed] = store.blob_path(fixed)
    return ResolvedWeights(model_sha, fixed, tuple(auto)), files


def ship_weights(fs, root: str, files: dict[str, Path]) -> dict:
    """Copy each weights file into the archive under its digest (skipping intact copies) before
    any unit commits; re-hashes what it sends. Returns {blobs, written, bytes, seconds}."""
    start = time.perf_counter()
    written = sent = 0
    for digest, path in sorted(files.items()):
        data = Path(path).read_bytes()
        if put_blob(fs, root, digest, data):
            written += 1
            sent += len(data)
    return {"blobs": len(files), "written": written, "bytes": sent, "seconds": time.perf_counter() - start}


class ArchiveWeights:
    """Weights by digest for one archive (fs, root), or for none (fs None: loose encoded files):
    the verified local cache, else the archive's copy, else the weights shipped in the package
    (archives written before weights travelled with them, made with the shipped model)."""

    def __init__(self, fs=None, root: str | None = None, store: WeightStore | None = None):
        self.fs, self.root = fs, root
        self.store = store or WeightStore()
        self.fetched_bytes = 0  # read from the archive by this process (the cost of shipping)

    def path(self, digest: str) -> Path:
        local = self.store.blob_path(digest)
        if local.exists() and sha256_of(local) == digest:
            return local
        data = read_blob(self.fs, self.root, digest, missing_ok=True) if self.fs is not None else None
        if data is not None:
            self.fetched_bytes += len(data)
            with self.store.download(lambda: io.BytesIO(data), f"weights {digest}") as (tmp, actual, _):
                if actual != digest:  # the store's temporary disagrees with what was verified
                    raise WeightsError(f"weights {digest} changed while being cached")
                return self.store.publish(tmp, actual)
        shipped = self._shipped(digest)
        if shipped is not None:
            return shipped
        where = f"the archive at {self.root}" if self.fs is not None else "this encoded image"
        raise WeightsError(f"weights {digest} are not carried by {where} and not in the local store at "
                           f"{self.store.root}: install them with lowrank-batch weights install SRC --sha256 {digest}")

    def _shipped(self, digest: str) -> Path | None:
        if digest == DEFAULT_MODEL_SHA256:
            return self.store.blob_path(ensure_default(self.store).sha256)
        for modality, pinned in DEFAULT_ADAPTER_SHA256.items():
            if digest == pinned:
                return self.store.blob_path(ensure_default_adapter(self.store, modality).sha256)
        return None

    def codec(self, model_sha256: str, adapter_sha256: str | None = None, device: str = "cpu",
              config: CodecConfig | None = None) -> Codec:
        """A codec holding exactly these weights (the model loaded once per process)."""
        codec = Codec(cached_model(str(self.path(model_sha256)), model_sha256), config, device)
        if adapter_sha256:
            attach_adapter(codec, self.path(adapter_sha256), adapter_sha256)
        return codec


def attach_adapter(codec: Codec, path: Path, digest: str) -> None:
    """Apply the adapter file `path` (canonical, digest checked by the caller) to the codec,
    refusing one made for another base."""
    adapter = read_canonical(path, f"adapter {digest}")
    if adapter.base_sha256 != codec.model.sha256:
        raise WeightsError(f"adapter {digest} was made for base model {adapter.base_sha256}, "
                           f"not {codec.model.sha256}")
    codec.apply_adapter(adapter.layers, digest)
    codec.adapter_provenance = adapter.provenance or {}
