"""Typed records and options: validated where they are built, so bad input fails early and by name."""

import json

import pytest

from lowrank_batch.archive.records import ArchiveRow, CommitRecord, FailureRecord, RunSummary
from lowrank_batch.errors import InvalidParameterError
from lowrank_batch.pipeline.job import JobOptions
from lowrank_batch.pipeline.worker import EncodeSettings, UnitResult


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "lossy", "quality": 5}, "quality must be a number of dB from 10 to 90, got 5"),
    ({"mode": "lossy", "quality": 95.0}, "from 10 to 90"),
    ({"mode": "near-lossless", "max_error": 0}, "max_error (near-lossless) must be an integer >= 1"),
    ({"mode": "near-lossless", "max_error": 1.5}, "must be an integer"),
    ({"mode": "lossless", "max_error": 2}, "near-lossless mode only"),
    ({"mode": "lossles"}, "mode must be one of"),
])
def test_encode_settings_refuse_what_the_codec_would_refuse(kwargs, words):
    with pytest.raises(InvalidParameterError) as info:
        EncodeSettings(**kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"workers": 0}, "--workers must be an integer >= 1"),
    ({"gpus_per_worker": -1}, "--gpus-per-worker must be a number >= 0"),
    ({"batch_size": 0}, "--batch-size must be an integer >= 1"),
    ({"storage_retry_seconds": -1}, "--storage-retry-seconds must be a number >= 0"),
])
def test_job_options_refuse_bad_values(kwargs, words):
    with pytest.raises(InvalidParameterError, match=words):
        JobOptions(**kwargs)


def test_cli_quality_5_fails_before_ray_starts(tmp_path, capsys):
    """Before: Ray started, then every image failed. Now: exit 2 and a sentence, Ray never imported."""
    import subprocess
    import sys

    import numpy as np

    from lowrank_batch.images import write_image

    (tmp_path / "src").mkdir()
    write_image(tmp_path / "src" / "a.png", np.zeros((16, 16), np.uint8))  # a job that would run
    code = ("import sys; from lowrank_batch.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'Ray was imported'; raise SystemExit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "encode", str(tmp_path / "src"), str(tmp_path / "dst"),
                          "--mode", "lossy", "--quality", "5"], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "quality must be a number of dB from 10 to 90, got 5" in out.stderr


def test_failure_record_checks_its_stage_and_trims_its_message():
    with pytest.raises(ValueError, match="stage"):
        FailureRecord("a.png", "/a.png", "exploded", "E", "m")
    record = FailureRecord.of("a.png", "/a.png", "encode", ValueError("x" * 2000))
    assert record.error == "ValueError" and len(record.message) == 500
    stamped = record.stamped("run-1", "2026-01-01T00:00:00")
    assert stamped["run_id"] == "run-1" and record.run_id is None  # records are values


def test_archive_row_refuses_an_inconsistent_row():
    row = dict(image_id="a", source_uri="/a", source_etag="e", source_size=1, shape=[2, 2], dtype="uint8",
               bits_stored=8, mode="lossless", max_error=0, latent=b"ab", residual=b"c", pixel_sha256="0",
               model_sha256="0", adapter_sha256=None, psnr=None, encoded_bytes=3, codec_version="t",
               metadata_json="{}", run_id="r")
    assert ArchiveRow(**row).to_dict()["encoded_bytes"] == 3
    with pytest.raises(ValueError, match="encoded_bytes"):
        ArchiveRow(**{**row, "encoded_bytes": 4})
    with pytest.raises(ValueError, match="lossy row has a residual"):
        ArchiveRow(**{**row, "mode": "lossy"})


def test_commit_record_round_trips_and_refuses_hostile_paths():
    record = CommitRecord("data/u-1.parquet", "u", "r", "2026-01-01T00:00:00", index={"a": [0, 0]},
                          sources={"a": ["/a", "e", 1]})
    raw = record.to_json()
    assert json.loads(raw)["rows"] == 1 and "removed" not in json.loads(raw)  # as records always were
    assert CommitRecord.parse(raw) == record
    with pytest.raises(ValueError):
        CommitRecord.parse(raw.replace(b"data/u-1.parquet", b"../elsewhere/x.parquet"))


def test_run_summary_adds_units_and_saves_settings_and_codec():
    summary = RunSummary("r", "src", "dst", {"mode": "lossless"}, {"config": {"preview_rank": 4}})
    unit = UnitResult("u", encoded=2, bytes_in=100, bytes_out=25, pixels=50, adapters={"ct": 2},
                      failures=[FailureRecord("b", "/b", "decode", "E", "m")], failed=1, notes=["n"])
    summary.add_unit(unit)
    summary.add_unit(UnitResult("v", encoded=1, bytes_in=20, bytes_out=5, pixels=10, adapters={"ct": 1}, notes=["n"]))
    summary.finish(2.0)
    assert (summary.encoded, summary.failed, summary.adapters, summary.notes) == (3, 1, {"ct": 3}, ["n"])
    assert summary.ratio == 4.0 and summary["encoded"] == 3  # key access kept for older callers
    saved = json.loads(summary.to_json())
    assert saved["settings"] == {"mode": "lossless"} and saved["codec"]["config"] == {"preview_rank": 4}
    assert saved["failures"][0]["image_id"] == "b"
