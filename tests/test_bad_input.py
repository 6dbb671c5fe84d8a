"""Every bad input gets the project's own exception, naming what is wrong."""

import numpy as np
import pytest

from lowrank_batch import (
    ChecksumMismatchError,
    CorruptStreamError,
    EncodedImage,
    InvalidImageError,
    InvalidParameterError,
    LowrankError,
)

from .conftest import smooth_image


@pytest.mark.parametrize(
    "array, bits, match",
    [
        (np.zeros((8, 8), np.float32), 8, "dtype float32"),
        (np.zeros((8, 8), np.int64), 12, "dtype int64"),
        (np.full((8, 8), np.nan), 12, "NaN or Inf"),
        (np.full((8, 8), np.inf, np.float32), 12, "NaN or Inf"),
        (np.full((8, 8), 4096, np.uint16), 12, r"values span \[4096, 4096\]"),
        (np.full((8, 8), -3000, np.int16), 12, "signed bits_stored=12"),
        (np.zeros((0, 0), np.uint8), 8, "empty"),
        (np.zeros((1, 1), np.uint8), 8, "at least 2x2"),
        (np.zeros((1, 9), np.uint8), 8, "at least 2x2"),
        (np.zeros((8, 8, 4), np.uint8), 8, "1 or 3 channels, got 4"),
        (np.zeros((2, 8, 8, 1), np.uint8), 8, "2-D"),
        (np.zeros((8, 8), np.uint8), 12, "does not fit in dtype uint8"),
        ([[1, 2], [3, 4]], 8, "numpy array"),
    ],
)
def test_bad_images(codec, array, bits, match):
    with pytest.raises(InvalidImageError, match=match):
        codec.encode(array, bits)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bits_stored": 7}, "from 8 to 16"),
        ({"bits_stored": 17}, "from 8 to 16"),
        ({"bits_stored": 12.0}, "integer"),
        ({"bits_stored": 12, "mode": "fast"}, "mode must be one of"),
        ({"bits_stored": 12, "mode": "near-lossless"}, "needs an integer max_error"),
        ({"bits_stored": 12, "mode": "near-lossless", "max_error": 0}, "max_error must be from 1"),
        ({"bits_stored": 12, "mode": "near-lossless", "max_error": 5000}, "max_error must be from 1"),
        ({"bits_stored": 12, "mode": "lossless", "max_error": 3}, "near-lossless mode only"),
        ({"bits_stored": 12, "mode": "lossy", "quality": 5}, "quality must be"),
        ({"bits_stored": 12, "mode": "lossy", "quality": float("nan")}, "quality must be"),
        ({"bits_stored": 12, "rank": 999}, "rank must be from 1"),
    ],
)
def test_bad_parameters(codec, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        codec.encode(np.zeros((16, 16), np.uint16), **kwargs)


def test_errors_are_project_errors_and_value_errors():
    assert issubclass(InvalidImageError, LowrankError) and issubclass(InvalidImageError, ValueError)
    assert issubclass(ChecksumMismatchError, CorruptStreamError)


@pytest.fixture(scope="module")
def blob(codec):
    rng = np.random.default_rng(5)
    return codec.encode(smooth_image(rng, (40, 40), 12), 12).to_bytes()


@pytest.mark.parametrize("cut", [0, 1, 4, 5, 10, -5, -1])
def test_truncated_bytes(blob, cut):
    with pytest.raises(CorruptStreamError):
        EncodedImage.from_bytes(blob[:cut])


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + bytes(100), bytes(1000)])
def test_foreign_bytes(data):
    with pytest.raises(CorruptStreamError, match="not a lowrank_batch"):
        EncodedImage.from_bytes(data)


def test_not_bytes():
    with pytest.raises(CorruptStreamError, match="expected bytes"):
        EncodedImage.from_bytes("LRBI")


def test_future_format_version(blob):
    with pytest.raises(CorruptStreamError, match="format version 99"):
        EncodedImage.from_bytes(blob[:4] + bytes([99]) + blob[5:])


def test_flipping_any_one_byte_is_detected(codec, blob):
    for pos in range(0, len(blob), max(1, len(blob) // 60)):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x40
        with pytest.raises(CorruptStreamError):
            codec.decode(EncodedImage.from_bytes(bytes(damaged)))


def test_pixel_checksum_catches_damage_behind_a_valid_crc(codec, blob):
    """Streams altered and re-sealed with a fresh CRC never decode silently to wrong pixels:
    either an error, or (padding bits) the exact original; the SHA-256 check must fire."""
    enc = EncodedImage.from_bytes(blob)
    original = codec.decode(enc)
    stream = enc.residual_streams[0]
    checksum_errors = 0
    for pos in range(len(stream)):
        damaged = EncodedImage.from_bytes(blob)
        altered = bytearray(stream)
        altered[pos] ^= 0x10
        damaged.residual_streams[0] = bytes(altered)
        try:
            out = codec.decode(EncodedImage.from_bytes(damaged.to_bytes()))
        except ChecksumMismatchError:
            checksum_errors += 1
        except CorruptStreamError:
            pass
        else:
            assert np.array_equal(out, original), f"byte {pos}: silently wrong pixels"
    assert checksum_errors > 0


def test_wrong_model_is_refused(codec, blob):
    from lowrank_batch import WeightsError

    enc = EncodedImage.from_bytes(blob)
    enc.model_sha256 = "00" * 32
    with pytest.raises(WeightsError, match="encoded with model"):
        codec.decode(enc)
