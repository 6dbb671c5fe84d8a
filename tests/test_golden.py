"""Golden files: encoded bytes of every released format version keep decoding, forever.

tests/golden/vN/ holds bytes written by the release that introduced format version N, with
their source pixels and what decode gave then (tests/golden/make_golden.py). Lossless decodes
bit for bit, near-lossless to the recorded pixels; lossy and preview outputs go through the
float refiner, so they are held to the recorded integer latent reconstruction (its digest)
and to the recorded refined pixels within one grey level. Where encode still offers a
version, the same pixels must encode to the same bytes.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lowrank_batch import Codec, EncodedImage
from lowrank_batch.codec import pixels
from lowrank_batch.codec.codec import CodecConfig
from lowrank_batch.codec.format import READABLE_VERSIONS

GOLDEN = Path(__file__).resolve().parent / "golden"
VERSIONS = sorted(int(p.name[1:]) for p in GOLDEN.glob("v*") if (p / "manifest.json").is_file())
MANIFESTS = {v: json.loads((GOLDEN / f"v{v}" / "manifest.json").read_text()) for v in VERSIONS}
CASES = [(v, c) for v in VERSIONS for c in MANIFESTS[v]["cases"]]
# the encoder settings the files were made with (version 1 predates the manifest's "config")
RELEASE_CONFIG = {1: {"preview_rank": 4, "preview_step": 0.125}}


def test_every_readable_version_has_golden_files():
    assert VERSIONS, "no golden files found"
    assert set(READABLE_VERSIONS) <= set(VERSIONS)


@pytest.fixture(scope="module")
def codecs():
    default = Codec.load()  # installs the shipped model into the test's empty store
    cache = {default.model.sha256: default}

    def get(enc: EncodedImage) -> Codec:
        if enc.model_sha256 not in cache:
            cache[enc.model_sha256] = Codec.for_image(enc)
        return cache[enc.model_sha256]

    return get


@pytest.mark.parametrize("version, case", CASES, ids=[f"v{v}-{c['case']}" for v, c in CASES])
def test_golden_file_decodes(codecs, version, case):
    folder = GOLDEN / f"v{version}"
    blob = (folder / f"{case['case']}.lrbi").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == case["bytes_sha256"], "the golden file itself changed"
    assert blob[4] == version
    enc = EncodedImage.from_bytes(blob)
    codec = codecs(enc)
    source = np.load(folder / f"{case['case']}.src.npy")
    recorded = np.load(folder / f"{case['case']}.out.npy")
    assert pixels.pixel_sha256(codec._decode_latents(enc)) == case["latent_recon_sha256"]
    preview = bool(case.get("preview"))
    out = codec.decode(enc, preview=preview)
    assert out.dtype == source.dtype and out.shape == source.shape
    if preview or case["mode"] == "lossy":
        assert np.abs(out.astype(np.int64) - recorded).max() <= 1
    elif case["mode"] == "lossless":
        assert np.array_equal(out, source)
        assert pixels.pixel_sha256(out) == case["pixel_sha256"]
    else:
        assert np.array_equal(out, recorded)
        assert pixels.pixel_sha256(out) == case["decoded_sha256"]
        assert np.abs(out.astype(np.int64) - source).max() <= case["max_error"]


@pytest.mark.parametrize("version, case", [(v, c) for v, c in CASES if not c.get("preview")],
                         ids=[f"v{v}-{c['case']}" for v, c in CASES if not c.get("preview")])
def test_same_pixels_encode_to_the_same_bytes(codecs, version, case):
    folder = GOLDEN / f"v{version}"
    blob = (folder / f"{case['case']}.lrbi").read_bytes()
    enc = EncodedImage.from_bytes(blob)
    config = {**MANIFESTS[version].get("config", RELEASE_CONFIG.get(version)), **case.get("config", {})}
    codec = Codec(codecs(enc).model, CodecConfig(**config))
    source = np.load(folder / f"{case['case']}.src.npy")
    again = codec.encode(source, case["bits_stored"], mode=case["mode"], max_error=case.get("max_error"),
                         quality=case.get("quality"), format_version=version)
    assert again.to_bytes() == blob
