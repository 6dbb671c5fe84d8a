"""Columns of the archive (GUIDE § 1) and where files live under an archive prefix.

    <archive>/data/<unit>-<token>.parquet      image rows; one row group per ROWS_PER_GROUP images
    <archive>/_commits/<unit>-<token>.json     commit record: file, rows, id -> row group; written
                                              after its data file is complete: THE commit point
    <archive>/failures/<unit>-<token>.parquet  failure records of that unit (a log: later runs
                                              may archive the input; `Archive.failures()` tells)
    <archive>/runs/<run-id>.json               run summaries
Readers see only data files named by a commit record, so a crash mid-write leaves nothing
half-visible (object stores have no atomic rename; a single PUT of the record is atomic).
"""

from __future__ import annotations

import pyarrow as pa

DATA_DIR, COMMITS_DIR, RUNS_DIR, FAILURES_DIR = "data", "_commits", "runs", "failures"
ROWS_PER_GROUP = 4  # small row groups: decoding one image reads about one image's bytes
BLOB_COLUMNS = ("latent", "residual", "metadata_json", "dicom_header")
# Columns added after archives were first written: nullable, and absent from older data files
# (readers give None for them there; DuckDB reads mixed files with union_by_name=true)
DICOM_COLUMNS = ("modality", "study_instance_uid", "series_instance_uid", "sop_instance_uid")
LATER_COLUMNS = ("dicom_header", "dicom_sha256", *DICOM_COLUMNS)

SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("source_uri", pa.string()),
    ("source_etag", pa.string()),
    ("source_size", pa.int64()),
    ("shape", pa.list_(pa.int32())),
    ("dtype", pa.string()),
    ("bits_stored", pa.int16()),
    ("mode", pa.string()),
    ("max_error", pa.int32()),
    ("latent", pa.binary()),
    ("residual", pa.binary()),
    ("pixel_sha256", pa.string()),
    ("model_sha256", pa.string()),
    ("adapter_sha256", pa.string()),
    ("psnr", pa.float64()),
    ("encoded_bytes", pa.int64()),
    ("codec_version", pa.string()),
    ("metadata_json", pa.string()),
    ("run_id", pa.string()),
    ("unit_id", pa.string()),
    # a DICOM file's own bytes, once per file (on its first frame's row, null elsewhere): the
    # Part 10 file less its Pixel Data value, compressed (images/dicom_bytes.KeptFile), and
    # the SHA-256 of the whole file as received
    ("dicom_header", pa.binary()),
    ("dicom_sha256", pa.string()),
    # DICOM identity as real columns (null for other images and in archives written before them)
    ("modality", pa.string()),
    ("study_instance_uid", pa.string()),
    ("series_instance_uid", pa.string()),
    ("sop_instance_uid", pa.string()),
])

FAILURE_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("source_uri", pa.string()),
    ("stage", pa.string()),
    ("error", pa.string()),
    ("message", pa.string()),
    ("run_id", pa.string()),
    ("time", pa.string()),
])
