"""Train a tiny classifier on latents read straight from an archive on S3 (SeaweedFS here).

    python examples/train_on_latents.py                    # starts a local SeaweedFS, builds a demo archive
    python examples/train_on_latents.py --archive s3://bucket/prefix --label-from modality

The demo archive holds two kinds of 12-bit images (smooth anatomy-like fields and striped
ones, e.g. a grid artefact); the classifier never decodes a pixel: it reads each image's
stored low-rank latents through the archive's torch dataset (2 DataLoader workers), pools
them per component and learns which kind it is. It prints the held-out accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = 4  # lossless archives keep 4 latent components per patch


def features(latents: np.ndarray, step: float) -> torch.Tensor:
    """Mean and spread of each of the first COMPONENTS latent planes, in pixel-range units."""
    x = torch.as_tensor(latents[:COMPONENTS], dtype=torch.float32) * step
    x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, COMPONENTS - x.shape[0]))
    return torch.cat([x.mean(dim=(1, 2)), x.std(dim=(1, 2), unbiased=False)])


def build_demo(uri: str, per_class: int = 48) -> None:
    import fsspec

    from lowrank_batch import Codec
    from lowrank_batch.archive import UnitWriter

    codec = Codec.load()
    rng = np.random.default_rng(0)
    fs, root = fsspec.core.url_to_fs(uri)
    yy, xx = np.mgrid[0:48, 0:64]
    for kind in ("smooth", "striped"):
        rows = []
        for k in range(per_class):
            base = 1800 + 600 * np.sin(xx / rng.uniform(6, 14)) * np.cos(yy / rng.uniform(8, 16))
            if kind == "striped":
                base += 400 * (np.sin(xx * rng.uniform(1.2, 2.0)) > 0)
            a = np.clip(base + rng.normal(0, 20, base.shape), 0, 4095).astype(np.uint16)
            enc = codec.encode(a, 12)
            latent, residual = enc.split()
            rows.append({"image_id": f"{kind}/{k:03d}.png", "source_uri": f"demo://{kind}/{k}", "source_etag": "1",
                         "source_size": a.nbytes, "shape": list(a.shape), "dtype": "uint16", "bits_stored": 12,
                         "mode": enc.mode, "max_error": 0, "latent": latent, "residual": residual,
                         "pixel_sha256": enc.pixel_sha256, "model_sha256": enc.model_sha256,
                         "adapter_sha256": None, "psnr": None, "encoded_bytes": len(latent) + len(residual),
                         "codec_version": "demo", "metadata_json": "{}", "run_id": "demo", "unit_id": kind})
        UnitWriter(fs, root, kind, "demo").write(rows)


def train(uri: str, label_from: str, steps: int = 300) -> dict:
    from torch.utils.data import DataLoader

    from lowrank_batch.archive import Archive

    archive = Archive.open(uri)
    columns = [label_from] if label_from != "folder" else []
    loader = DataLoader(archive.torch_dataset(columns=columns), batch_size=None, num_workers=2,
                        collate_fn=lambda x: x)
    xs, names = [], []
    for item in loader:  # latents only: nothing is decoded
        xs.append(features(item["latents"], item["latent_step"]))
        names.append(item["image_id"].split("/")[0] if label_from == "folder" else str(item[label_from]))
    classes = sorted(set(names))
    if len(classes) < 2:
        raise SystemExit(f"need at least two classes of {label_from!r}, found {classes}")
    x = torch.stack(xs)
    y = torch.tensor([classes.index(n) for n in names])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    cut = int(0.75 * len(y))
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    x = (x - mean) / std
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, len(classes)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[:cut]), y[:cut])
        loss.backward()
        opt.step()
    with torch.no_grad():
        held_out = (model(x[cut:]).argmax(1) == y[cut:]).float().mean().item()
    return {"images": len(y), "classes": classes, "train_loss": loss.item(), "held_out_accuracy": held_out,
            "held_out": len(y) - cut}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=None, help="an archive URI; default: a demo archive on a local SeaweedFS")
    parser.add_argument("--label-from", default="folder", help="'folder' (first part of the id) or a column")
    args = parser.parse_args()
    if args.archive:
        print(train(args.archive, args.label_from))
        return
    sys.path.insert(0, str(ROOT))
    from tests.s3server import seaweedfs  # a real S3 server on 127.0.0.1, stopped on exit

    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp), buckets=("archive",)):
        build_demo("s3://archive/demo")
        print(train("s3://archive/demo", "folder"))


if __name__ == "__main__":
    main()
