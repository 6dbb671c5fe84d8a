"""Fuzzing the parsers that read untrusted bytes (hypothesis, bounded): EncodedImage.from_bytes
and decode, the safetensors header check and model loading, the archive reader. Nothing but
the project's own exceptions may escape."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_batch import EncodedImage
from lowrank_batch.errors import LowrankError

from .conftest import smooth_image

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def blob(codec):
    return codec.encode(smooth_image(np.random.default_rng(9), (40, 33), 12), 12).to_bytes()


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, pos, value in edits:
        if not out:
            break
        pos %= len(out)
        if kind == 0:
            out[pos] ^= value or 1
        elif kind == 1:
            del out[pos : pos + value]
        else:
            out[pos:pos] = bytes([value]) * (value % 7 + 1)
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(edits=EDITS)
def test_mutated_encoded_images_raise_only_our_errors(codec, blob, edits):
    data = _mutate(blob, edits)
    try:
        enc = EncodedImage.from_bytes(data)
        codec.decode(enc)
        codec.decode(enc, preview=True)
    except LowrankError:
        pass


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_our_errors(codec, data):
    try:
        codec.decode(EncodedImage.from_bytes(b"LRBI" + data))
    except LowrankError:
        pass


def _header_strategy():
    tensor = st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F16", "I64", "U8", "BOOL", "Q7", "", "F64"]),
        "shape": st.lists(st.integers(-3, 1 << 40), max_size=4),
        "data_offsets": st.lists(st.integers(-5, 1 << 62), min_size=0, max_size=3),
    })
    return st.dictionaries(st.text(max_size=12), st.one_of(tensor, st.integers(), st.text(max_size=5)), max_size=5)


@FUZZ
@given(header=_header_strategy(), body=st.binary(max_size=256), length_delta=st.integers(-16, 16))
def test_safetensors_headers_raise_only_weights_errors(tmp_path, header, body, length_delta):
    from lowrank_batch.weights.model_file import load_model
    from lowrank_batch.weights.safetensors_check import read_header

    text = json.dumps(header).encode()
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(struct.pack("<Q", max(0, len(text) + length_delta)) + text + body)
    for check in (read_header, load_model):
        try:
            check(path)
        except LowrankError:
            pass


@FUZZ
@given(record=st.one_of(st.binary(max_size=200), st.dictionaries(
    st.sampled_from(["file", "index", "sources", "committed_at", "removed", "failures"]),
    st.one_of(st.text(max_size=8), st.integers(), st.dictionaries(st.text(max_size=4), st.lists(st.integers(), max_size=2),
                                                                  max_size=2)), max_size=6).map(
    lambda d: json.dumps(d).encode())), data=st.binary(max_size=300))
def test_archive_reader_raises_only_our_errors(tmp_path_factory, record, data):
    from lowrank_batch.archive import Archive
    from lowrank_batch.pipeline.decoding import ArchiveDecoder

    root = tmp_path_factory.mktemp("fuzzarchive")
    (root / "_commits").mkdir()
    (root / "data").mkdir()
    (root / "_commits" / "u-1.json").write_bytes(record)
    (root / "data" / "u-1.parquet").write_bytes(data)
    try:
        archive = Archive.open(str(root))
        archive.damaged_record_ids()
        for image_id in archive.ids():
            ArchiveDecoder(archive).get(image_id)
    except LowrankError:
        pass


@pytest.mark.parametrize("file", ["../outside.parquet", "/etc/passwd", "data/../../x.parquet", "other/x.parquet"])
def test_a_commit_record_naming_a_file_outside_the_archive_is_refused(tmp_path, file):
    from lowrank_batch.archive import Archive

    (tmp_path / "outside.parquet").write_bytes(b"PAR1")
    root = tmp_path / "archive"
    (root / "_commits").mkdir(parents=True)
    record = {"file": file, "index": {"x.png": [0, 0]}, "sources": {"x.png": ["file:///x.png", "e", 1]},
              "committed_at": "2026-01-01T00:00:00", "failures": []}
    (root / "_commits" / "u-1.json").write_text(json.dumps(record))
    archive = Archive.open(str(root))
    assert archive.ids() == [] and archive.damaged_records == ["u-1.json"]
