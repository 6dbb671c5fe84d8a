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
