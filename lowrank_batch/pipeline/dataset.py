"""An archive as training data: latents, previews or full pixels with their metadata, streamed
into Ray Data or a PyTorch IterableDataset, each live image exactly once.

`latents` are the image's quantised low-rank coefficients as stored (integers; multiply by
`latent_step` for units of the full pixel range), shaped (components, rows, cols) on the
16x16 patch grid: a compact, already-computed representation to train on without decoding.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from ..codec import lowrank
from ..codec.format import EncodedImage
from ..codec.residual_coder import decode_plane
from ..archive.table import live_by_file, read_live

DECODES = (None, "preview", "full")
BLOBS = ["latent", "residual"]


def latent_grid(enc: EncodedImage, patch: int = 16, channels: int = 1) -> np.ndarray:
    """The stored latents of an encoded image, (groups * rank, rows, cols), int32; pure (no weights).
    `patch` and `channels` are the model's (the shipped model: 16, 1)."""
    layout = enc.layout
    hp, wp = lowrank.grid_shape(layout.height, layout.width, patch)
    groups = max(1, layout.channels // channels)
    lo, hi = enc.latent_range
    stacked = decode_plane(enc.latent_stream, groups * enc.rank * hp, wp, lo, hi)
    return np.asarray(stacked, dtype=np.int32).reshape(groups * enc.rank, hp, wp)


def _check(decode, columns):
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
    return [c for c in (columns or []) if c not in BLOBS]


def _decoder(archive, enc: EncodedImage):
    """The codec with the weights the row names, from the archive's own copy (cached per process)."""
    from .archive_weights import ArchiveWeights

    key = (archive.root, enc.model_sha256, enc.adapter_sha256)
    cache = _decoder.__dict__.setdefault("cache", {})
    if key not in cache:
        cache[key] = ArchiveWeights(archive.fs, archive.root).codec(enc.model_sha256, enc.adapter_sha256)
    return cache[key]


def _item(archive, row: dict, columns: list[str], decode: str | None) -> dict:
    enc = EncodedImage.join(row["latent"], row.get("residual") if decode == "full" else None)
    item = {"image_id": row["image_id"], **{c: row[c] for c in columns if c != "image_id"}}
    item["latents"] = latent_grid(enc)
    item["latent_step"] = float(enc.latent_step)
    if decode is not None:
        item["pixels"] = _decoder(archive, enc).decode(enc, preview=decode == "preview")
    return item


def read_items(archive, file: str, ids: list[str], columns: list[str], decode: str | None) -> Iterator[dict]:
    """The items of `ids` (all in one data file), in id order."""
    blobs = ["latent"] + (["residual"] if decode == "full" else [])
    table = read_live(archive, file, ids, list(dict.fromkeys([*columns, *blobs])))
    for row in sorted(table.to_pylist(), key=lambda r: r["image_id"]):
        yield _item(archive, row, columns, decode)


def shard(ids: list[str], rank: int, world_size: int, worker: int, workers: int) -> list[str]:
    """Ids for one DataLoader worker of one rank: every id in exactly one shard (pure, tested)."""
    index, total = rank * workers + worker, world_size * workers
    return ids[index::total]


def _rank_and_world() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def torch_dataset(archive, columns: list[str] | None = None, decode: str | None = None,
                  rank: int | None = None, world_size: int | None = None):
    """A torch IterableDataset over the archive's live images (see ArchiveDataset)."""
    return ArchiveDataset(archive, columns, decode, rank, world_size)


def _torch_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class ArchiveDataset(_torch_base()):
    """Yields dicts: image_id, the requested columns, `latents` (int32 array), `latent_step`,
    and with decode="preview"/"full" `pixels` (the preview, or the image as archived). Sharded
    over DataLoader workers and ranks (torch.distributed, else RANK/WORLD_SIZE, else given),
    so that every live image is yielded exactly once per epoch across all of them."""

    def __init__(self, archive, columns=None, decode=None, rank=None, world_size=None):
        self.archive, self.decode = archive, decode
        self.columns = _check(decode, columns)
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rank, world = _rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        mine = set(shard(self.archive.ids(), rank, world, worker, workers))
        view = _view(self.archive.uri) if info else self.archive  # s3fs clients are not fork-safe
        for file, ids in live_by_file(self.archive).items():
            wanted = [i for i in ids if i in mine]
            if wanted:
                yield from read_items(view, file, wanted, self.columns, self.decode)


def _view(uri: str):
    """What read_items needs of an archive (fs, root), with this process's own client."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    return type("View", (), {"fs": fs, "root": root.rstrip("/")})()


class _ReadChunk:
    """Ray Data: one chunk of ids of one data file -> its items (the archive reopened from its
    files' names, not from the driver's state, which would travel with every task)."""

    def __init__(self, uri: str, columns: list[str], decode: str | None):
        self.uri, self.columns, self.decode = uri, columns, decode

    def __call__(self, task: dict) -> list[dict]:
        return list(read_items(_view(self.uri), task["file"], list(task["ids"]), self.columns, self.decode))


def to_ray_dataset(archive, columns: list[str] | None = None, decode: str | None = None, chunk: int = 64,
                   num_cpus: float = 1.0):
    """A Ray Dataset of the live images' items (as torch_dataset yields them), read and decoded in
    parallel on the cluster, `chunk` images per task."""
    import ray

    columns = _check(decode, columns)
    tasks = [{"file": file, "ids": ids[k:k + chunk]} for file, ids in live_by_file(archive).items()
             for k in range(0, len(ids), chunk)]
    return ray.data.from_items(tasks).flat_map(_ReadChunk(archive.uri, columns, decode), num_cpus=num_cpus)
