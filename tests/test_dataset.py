"""Latents as a dataset: the torch IterableDataset yields each live image exactly once across
2 DataLoader workers x 2 ranks; Ray Data returns exactly the live rows, decoded exactly."""

import numpy as np
import pytest

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.pipeline.dataset import latent_grid, shard
from lowrank_batch.codec.format import EncodedImage

from .test_live_table import messy_archive


def test_shards_cover_every_id_once():
    ids = [f"i{k}" for k in range(23)]
    got = [i for r in range(2) for w in range(3) for i in shard(ids, r, 2, w, 3)]
    assert sorted(got) == sorted(ids) and len(got) == len(ids)


def test_torch_dataset_yields_each_live_image_once_across_workers_and_ranks(codec, tmp_path):
    from torch.utils.data import DataLoader

    versions = messy_archive(codec, tmp_path)
    archive = Archive.open(str(tmp_path))
    seen = []
    for rank in range(2):
        dataset = archive.torch_dataset(columns=["source_etag", "modality"], decode="full", rank=rank, world_size=2)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, collate_fn=lambda x: x)
        for item in loader:
            seen.append(item["image_id"])
            assert np.array_equal(item["pixels"], versions[item["image_id"]][-1]), item["image_id"]
            assert item["latents"].ndim == 3 and item["latents"].dtype == np.int32
    assert sorted(seen) == sorted(versions)  # exactly once: no duplicates, none missing
    (item,) = [i for i in archive.torch_dataset(decode="preview") if i["image_id"] == "m01-1.png"]
    assert np.array_equal(item["pixels"], ArchiveDecoder(archive).get("m01-1.png", preview=True))


def test_latent_grid_is_the_stored_latents(codec, rng):
    from .conftest import smooth_image

    a = smooth_image(rng, (40, 70), 12)
    enc = EncodedImage.from_bytes(codec.encode(a, 12).to_bytes())
    grid = latent_grid(enc)
    assert grid.shape == (enc.rank, 3, 5) and np.abs(grid).max() > 0


def test_ray_dataset_has_exactly_the_live_rows_decoded(cluster, codec, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    versions = messy_archive(codec, tmp_path)
    archive = Archive.open(str(tmp_path))
    rows = archive.to_ray_dataset(columns=["run_id"], decode="full", chunk=4, num_cpus=0.5).take_all()
    assert sorted(r["image_id"] for r in rows) == sorted(versions)
    for r in rows:
        assert np.array_equal(np.asarray(r["pixels"]), versions[r["image_id"]][-1]), r["image_id"]
    with pytest.raises(ValueError, match="decode must be one of"):
        archive.to_ray_dataset(decode="thumbnail")
