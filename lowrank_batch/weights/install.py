"""Installing into the store: sources (paths and fsspec URLs), models, adapters, the default.

Every check runs on the downloaded temporary before anything becomes visible, so a refused
file leaves the store unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import posixpath
import uuid
from pathlib import Path

from ..codec import lora
from ..codec.loaded import LowRankModel
from ..errors import WeightsError
from .adapters import Adapter, is_canonical, read_canonical, read_kohya, read_peft, save_canonical
from .defaults import (DEFAULT_ADAPTER_SHA256, DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256, default_adapter_file,
                       default_model_file)
from ..hashing import file_sha256
from .model_file import load_model
from .safetensors_check import refuse_pickle
from .store import StoreEntry, WeightStore


def _is_url(src: str) -> bool:
    return "://" in src


def _opener(src: str):
    """A callable returning a binary file object for a local path or an fsspec URL."""
    if _is_url(src):
        import fsspec

        return lambda: fsspec.open(src, "rb").open()
    path = Path(src)
    if not path.is_file():
        raise WeightsError(f"{src}: no such file")
    return lambda: open(path, "rb")


def _is_folder(src: str) -> bool:
    if _is_url(src):
        import fsspec

        fs, path = fsspec.core.url_to_fs(src)
        return fs.isdir(path)
    return Path(src).is_dir()


def _join(src: str, name: str) -> str:
    return posixpath.join(src.rstrip("/"), name) if _is_url(src) else str(Path(src) / name)


def _check_digest(src: str, actual: str, expected: str | None) -> None:
    if expected and actual != expected.lower():
        raise WeightsError(f"{src}: SHA-256 is {actual}, expected {expected.lower()}; nothing was installed")


def install_model(store: WeightStore, src: str, name: str | None = None, sha256: str | None = None) -> StoreEntry:
    """Fetch, verify (digest, header, strict load), then publish and name a model file."""
    refuse_pickle(src, b"")
    name = name or Path(src.rstrip("/")).name.removesuffix(".safetensors")
    with store.download(_opener(src), src) as (tmp, digest, size):
        _check_digest(src, digest, sha256)
        model = load_model(tmp, label=src)
        store.publish(tmp, digest)
    return store.add_ref("models", name, digest, size, model.metadata.get("architecture", "?"), src)


def ensure_default(store: WeightStore) -> StoreEntry:
    """The shipped default model, installed on first use and verified against its pinned digest."""
    for entry in store.entries("models"):
        if entry.sha256 == DEFAULT_MODEL_SHA256 and store.blob_path(entry.sha256).exists():
            return entry
    return install_model(store, str(default_model_file()), DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256)


def ensure_default_adapter(store: WeightStore, modality: str) -> StoreEntry:
    """A shipped adapter (ct, mr, xray, natural), installed on first use, bound to the default model."""
    if modality not in DEFAULT_ADAPTER_SHA256:
        raise WeightsError(f"no shipped adapter {modality!r} (shipped: {', '.join(sorted(DEFAULT_ADAPTER_SHA256))})")
    for entry in store.entries("adapters"):
        if entry.sha256 == DEFAULT_ADAPTER_SHA256[modality] and store.blob_path(entry.sha256).exists():
            return entry
    base = ensure_default(store)
    entry = install_adapter(store, str(default_adapter_file(modality)), base.sha256, modality)
    if entry.sha256 != DEFAULT_ADAPTER_SHA256[modality]:
        raise WeightsError(f"shipped adapter {modality} installs as {entry.sha256}, pinned "
                           f"{DEFAULT_ADAPTER_SHA256[modality]}: the package is damaged or the pin is stale")
    return entry


def install_adapter(store: WeightStore, src: str, base: str, name: str | None = None,
                    sha256: str | None = None) -> StoreEntry:
    """Install a peft folder, a kohya file or one of ours, bound to the base model `base`.

    `sha256` pins the downloaded file (a peft folder's adapter_model.safetensors); the store
    keeps the converted canonical file under its own digest.
    """
    base_entry = store.resolve("models", base)
    model = cached_model(str(store.blob_path(base_entry.sha256)), base_entry.sha256)
    name = name or Path(src.rstrip("/")).name.removesuffix(".safetensors")
    with contextlib.ExitStack() as stack:
        if _is_folder(src):
            config = stack.enter_context(store.download(_opener(_join(src, "adapter_config.json")), src))
            weights = stack.enter_context(store.download(_opener(_join(src, "adapter_model.safetensors")), src))
            _check_digest(src, weights[1], sha256)
            source_digest = weights[1]
            adapter = read_peft(config[0], weights[0], src)
        else:
            refuse_pickle(src, b"")
            tmp, source_digest, _ = stack.enter_context(store.download(_opener(src), src))
            _check_digest(src, source_digest, sha256)
            if is_canonical(tmp, src):
                adapter = read_canonical(tmp, src)
                if adapter.base_sha256 and adapter.base_sha256 != base_entry.sha256:
                    raise WeightsError(_binding_message(src, adapter.base_sha256, base_entry.sha256))
            else:
                names = [n for n, _ in model.refiner.named_modules()]
                adapter = read_kohya(tmp, src, names)
        adapter.base_sha256 = base_entry.sha256
        check_fits(model, adapter, src)
        canonical = store.root / "tmp" / f"adapter-{uuid.uuid4().hex}"
        stack.callback(lambda: canonical.unlink(missing_ok=True))
        save_canonical(canonical, adapter)
        digest, size = file_sha256(canonical), canonical.stat().st_size
        store.publish(canonical, digest)
    return store.add_ref("adapters", name, digest, size, f"lora/{adapter.source_format}", src,
                         base_entry.sha256, base_entry.name, source_digest)


def check_fits(model: LowRankModel, adapter: Adapter, label: str) -> None:
    """Attach to a throwaway copy of the refiner: raises listing every mismatch."""
    probe = model.refiner.untrained_like()
    try:
        lora.attach(probe, "probe", adapter.layers)
    except WeightsError as exc:
        raise WeightsError(f"{label}: {exc}") from None


def _binding_message(label: str, bound: str, base: str) -> str:
    return (f"{label}: adapter was made for base model {bound}, not {base}; "
            "use it with the base it was trained on")


@functools.lru_cache(maxsize=8)
def cached_model(path: str, sha256: str) -> LowRankModel:
    """Each model file is loaded once per process (workers reuse it)."""
    model = load_model(path)
    if model.sha256 != sha256:
        raise WeightsError(f"model blob {path} hashes to {model.sha256}, expected {sha256}; run weights verify")
    return model


def _resolve_for_base(store: WeightStore, ref: str, base_sha256: str) -> StoreEntry:
    """NAME resolves to its newest version made for this base (names are shared across bases:
    "ct" for the shipped model and "ct" for a custom one); then the shipped adapter of that
    name; NAME@VERSION and digests resolve exactly."""
    try:
        entry, missing = store.resolve("adapters", ref), None
    except WeightsError as exc:
        entry, missing = None, exc
    if entry is not None and entry.base_sha256 != base_sha256 and "@" not in ref:
        mine = [e for e in store.entries("adapters") if e.name == ref and e.base_sha256 == base_sha256]
        if mine:
            return max(mine, key=lambda e: e.version)
    if entry is None or entry.base_sha256 != base_sha256:
        shipped = {**{m: m for m in DEFAULT_ADAPTER_SHA256}, **{d: m for m, d in DEFAULT_ADAPTER_SHA256.items()}}
        if ref in shipped and base_sha256 == DEFAULT_MODEL_SHA256:
            return ensure_default_adapter(store, shipped[ref])
    if entry is None:
        raise missing
    return entry


def load_adapter(store: WeightStore, ref: str, base_sha256: str) -> tuple[Adapter, StoreEntry]:
    """An installed adapter bound to `base_sha256`; a shipped one (by name or digest) is
    installed on first use when the base is the shipped model."""
    entry = _resolve_for_base(store, ref, base_sha256)
    adapter = read_canonical(store.blob_path(entry.sha256), entry.ref)
    if adapter.base_sha256 != base_sha256:
        raise WeightsError(_binding_message(f"adapter {entry.ref}", adapter.base_sha256 or "?", base_sha256))
    return adapter, entry
