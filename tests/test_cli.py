"""The command line as a newcomer meets it: the demo and single-file encode/decode."""

import subprocess
import sys

import numpy as np

from lowrank_batch.cli import main
from lowrank_batch.images import read_image, write_image

from .conftest import smooth_image


def test_demo_runs_the_job_on_the_bundled_samples(cluster, tmp_path, capsys):
    """The README's first command: the Ray encode job archives the samples, each decodes back
    exactly by id, and what it kept is a real archive (read back here with pyarrow)."""
    import pyarrow.parquet as pq

    from lowrank_batch.archive import Archive

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "job: 4 encoded, 0 failed" in out
    archive = Archive.open(str(tmp_path / "archive"))
    assert sorted(archive.ids()) == sorted(p.name for p in (tmp_path / "src").iterdir())
    rows = pq.read_table(tmp_path / "archive" / "data").to_pylist()
    assert {r["image_id"]: r["bits_stored"] for r in rows} == {  # from the samples' PNG sBIT chunks
        "ct_693.png": 14, "mr_siemens.png": 12, "cr_rg3_crop.png": 10, "natural_camera.png": 8}
    for image_id in archive.ids():
        assert np.array_equal(read_image(tmp_path / "decoded" / image_id), read_image(tmp_path / "src" / image_id))
        assert f"{image_id}" in out


def test_demo_near_lossless(cluster, capsys):
    assert main(["demo", "--mode", "near-lossless", "--max-error", "3"]) == 0
    assert "all checks passed" in capsys.readouterr().out


def test_codec_encode_decode_files(tmp_path, rng):
    image = smooth_image(rng, (45, 60), 12)
    write_image(tmp_path / "in.png", image)
    assert main(["codec", "encode", str(tmp_path / "in.png"), str(tmp_path / "x.lrbi"), "--bits", "12"]) == 0
    assert main(["codec", "decode", str(tmp_path / "x.lrbi"), str(tmp_path / "out.png")]) == 0
    assert np.array_equal(read_image(tmp_path / "out.png"), image)
    assert main(["codec", "decode", str(tmp_path / "x.lrbi"), str(tmp_path / "p.npy"), "--preview"]) == 0
    assert read_image(tmp_path / "p.npy").shape == image.shape


def test_errors_are_clear_and_exit_2(tmp_path, capsys):
    (tmp_path / "bad.lrbi").write_bytes(b"nonsense")
    assert main(["codec", "decode", str(tmp_path / "bad.lrbi"), str(tmp_path / "o.png")]) == 2
    assert "not a lowrank_batch encoded image" in capsys.readouterr().err
    write_image(tmp_path / "big.png", np.full((8, 8), 5000, np.uint16))
    assert main(["codec", "encode", str(tmp_path / "big.png"), str(tmp_path / "o.lrbi"), "--bits", "12"]) == 2
    assert "values span [5000, 5000]" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "lowrank_batch.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def _tiny_archive(tmp_path, rng):
    """An archive of two images written by the unit writer (no Ray needed)."""
    import fsspec

    from lowrank_batch import Codec
    from lowrank_batch.archive import UnitWriter

    codec = Codec.load()
    rows, images = [], {}
    for name in ("a.png", "sub/b.png"):
        image = smooth_image(rng, (40, 48), 12)
        enc = codec.encode(image, 12)
        latent, residual = enc.split()
        images[name] = image
        rows.append({"image_id": name, "source_uri": f"/src/{name}", "source_etag": "e", "source_size": 1,
                     "shape": list(image.shape), "dtype": image.dtype.name, "bits_stored": 12, "mode": "lossless",
                     "max_error": 0, "latent": latent, "residual": residual, "pixel_sha256": enc.pixel_sha256,
                     "model_sha256": enc.model_sha256, "adapter_sha256": None, "psnr": None,
                     "encoded_bytes": len(latent) + len(residual), "codec_version": "t", "metadata_json": "{}",
                     "run_id": "r", "unit_id": "u"})
    UnitWriter(fsspec.filesystem("file"), str(tmp_path / "archive"), "u", "r").write(rows)
    return str(tmp_path / "archive"), images


def test_decode_into_a_folder_that_does_not_exist_creates_it(tmp_path, rng, capsys):
    """Before: exit 1 and a bare FileNotFoundError. Now the folder is made, as encode makes DST."""
    archive, images = _tiny_archive(tmp_path, rng)
    target = tmp_path / "newdir" / "deeper" / "x.npy"
    assert main(["decode", archive, "--id", "sub/b.png", "--out", str(target)]) == 0
    assert np.array_equal(np.load(target), images["sub/b.png"])
    assert main(["decode", archive, "--out", str(tmp_path / "all" / "here"), "--format", "npy"]) == 0
    assert np.array_equal(np.load(tmp_path / "all" / "here" / "sub__b.png.npy"), images["sub/b.png"])


def test_ls_failures_runs_json_is_one_document(tmp_path, rng, capsys):
    import json

    archive, images = _tiny_archive(tmp_path, rng)
    capsys.readouterr()
    assert main(["ls", archive, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [im["image_id"] for im in listing["images"]] == sorted(images)
    assert listing["images"][0]["shape"] == [40, 48] and listing["images"][0]["psnr"] is None
    assert main(["failures", archive, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failures"] == []
    assert main(["runs", archive, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []


def test_version_and_help_texts(capsys):
    import pytest

    from lowrank_batch import __version__
    from lowrank_batch.cli import build_parser

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"lowrank-batch {__version__}"
    parser = build_parser()
    undocumented = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.help is None and action.dest not in ("help",) and not action.option_strings == []:
                undocumented.append(f"{name} {'/'.join(action.option_strings)}")
    for needed in ("encode --workers", "encode --gpus-per-worker"):
        assert needed not in undocumented
    codec_encode = parser._subparsers._group_actions[0].choices["codec"]._subparsers._group_actions[0].choices["encode"]
    assert all(a.help for a in codec_encode._actions if "--rank" in a.option_strings)


def test_shipped_adapters_are_listed_on_a_fresh_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_HOME", str(tmp_path / "fresh"))
    assert main(["adapters", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("ct", "mr", "xray", "natural"):
        assert any(line.startswith(name) and "shipped" in line for line in out.splitlines()), out
    assert main(["weights", "list"]) == 0
    assert "lowrank-base" in capsys.readouterr().out


def test_missing_model_names_the_real_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOWRANK_HOME", str(tmp_path / "fresh"))
    image = tmp_path / "a.npy"
    np.save(image, np.zeros((16, 16), np.uint8))
    assert main(["codec", "encode", str(image), str(tmp_path / "a.lrbi"), "--bits", "8", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "lowrank-batch weights install SRC --name nope" in err and "models install" not in err
