"""The command line as a newcomer meets it: the demo and single-file encode/decode."""

import subprocess
import sys

import numpy as np

from lowrank_batch.cli import main
from lowrank_batch.images import read_image, write_image

from .conftest import smooth_image


def test_demo_runs_on_the_bundled_samples(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out
    assert out.count(".png") == 4


def test_demo_near_lossless(capsys):
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
