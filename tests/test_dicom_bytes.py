"""Lossless means the file: a DICOM file archived losslessly comes back byte for byte.

Real files from pydicom's test data (and files derived from them with pydicom or by editing
their bytes), their pixels through the codec, the file rebuilt from the kept header
(images/dicom_file.py). Through the archive: test_dicom_archive_bytes.py.
"""

import glob
import hashlib
import importlib.util
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lowrank_batch.errors import ChecksumMismatchError, CorruptStreamError
from lowrank_batch.images.dicom import read_dicom_file
from lowrank_batch.images.dicom_bytes import KeptFile, layout, walk
from lowrank_batch.images.dicom_file import rebuild_dicom


def _bytes(name):
    return Path(get_testdata_file(name)).read_bytes()


def _saved(ds) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _edited(name, edit) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    edit(ds)
    return _saved(ds)


def _monochrome1(ds):
    ds.PhotometricInterpretation = "MONOCHROME1"


def _preamble(fill: bytes):
    return lambda: fill * (128 // len(fill)) + _bytes("MR_small.dcm")[128:]


def _odd_length_values() -> bytes:
    """Private elements with odd value lengths (writers that do not pad exist; pydicom pads, so
    they are planted in the bytes, before PatientName, with a private creator)."""
    data = _bytes("MR_small.dcm")
    at = data.index(b"\x10\x00\x10\x00PN")
    odd = (struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 3) + b"ODD"
           + struct.pack("<HH2sH", 0x0009, 0x1001, b"SH", 5) + b"ABCDE"
           + struct.pack("<HH2s2xI", 0x0009, 0x1002, b"OB", 7) + bytes(range(7)))
    return data[:at] + odd + data[at:]


def _high_bits() -> bytes:
    """12-bit data whose unused high bits are not zero (overlay planes in old files do that):
    the pixel values do not say them; the residue does."""
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    raw = np.frombuffer(ds.PixelData, "<u2").copy()
    raw[::7] |= 0xA000
    ds.PixelData = raw.tobytes()
    return _saved(ds)


def _implicit_private_sequence() -> bytes:
    """Implicit VR with a private sequence (undefined length) holding a nested sequence."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm"))
    block = ds.private_block(0x0011, "LOWRANK TEST", create=True)
    inner = Dataset()
    inner.add_new(0x00100020, "LO", "X1")
    item = Dataset()
    item.ReferencedSOPSequence = Sequence([inner])
    block.add_new(0x01, "SQ", Sequence([item]))
    block.add_new(0x02, "UN", b"\x01\x02\x03")
    for element in (ds[block.get_tag(0x01)],):
        element.is_undefined_length = True
    return _saved(ds)


# (id, bytes, what it exercises, pixels alone say it all: no residue)
UNCOMPRESSED = [
    ("CT_small", lambda: _bytes("CT_small.dcm"), "explicit VR LE, signed, preamble 'II*' + "
     "other bytes, trailing padding (FFFC,FFFC) after the pixels", True),
    ("MR_small_implicit", lambda: _bytes("MR_small_implicit.dcm"), "implicit VR little endian", True),
    ("MR_small_bigendian", lambda: _bytes("MR_small_bigendian.dcm"), "explicit VR big endian", True),
    ("emri_small", lambda: _bytes("emri_small.dcm"), "multi-frame (10)", True),
    ("emri_small_big_endian", lambda: _bytes("emri_small_big_endian.dcm"), "multi-frame, big endian", True),
    ("eCT_Supplemental", lambda: _bytes("eCT_Supplemental.dcm"), "enhanced CT: nested functional groups", True),
    ("MR-SIEMENS", lambda: _bytes("MR-SIEMENS-DICOM-WithOverlays.dcm"), "private CSA tags, overlays", True),
    ("gdcm-US-ALOKA-16", lambda: _bytes("gdcm-US-ALOKA-16.dcm"), "implicit VR, 16-bit palette, private", True),
    ("OBXXXX1A_expb", lambda: _bytes("OBXXXX1A_expb.dcm"), "8-bit palette in big endian OW", True),
    ("liver", lambda: _bytes("liver.dcm"), "1-bit segmentation, 3 frames", True),
    ("liver_expb", lambda: _bytes("liver_expb.dcm"), "1-bit, big endian", True),
    ("SC_rgb_small_odd", lambda: _bytes("SC_rgb_small_odd.dcm"), "odd-length pixel value, padded", True),
    ("SC_rgb_small_odd_big_endian", lambda: _bytes("SC_rgb_small_odd_big_endian.dcm"),
     "odd length, 8-bit in big endian OW", True),
    ("color-pl", lambda: _bytes("color-pl.dcm"), "RGB by plane (PlanarConfiguration 1)", True),
    ("SC_rgb_expb_16bit_2frame", lambda: _bytes("SC_rgb_expb_16bit_2frame.dcm"), "16-bit RGB, 2 frames, BE", True),
    ("preamble_zeros", _preamble(b"\x00"), "a preamble of zeros", True),
    ("preamble_other", _preamble(b"\xa5\x17"), "a preamble of other bytes", True),
    ("monochrome1", lambda: _edited("MR_small.dcm", _monochrome1), "MONOCHROME1", True),
    ("odd_values", _odd_length_values, "private elements with odd value lengths", True),
    ("implicit_private_sequence", _implicit_private_sequence, "implicit VR, private nested undefined SQ", True),
    ("mlut_18", lambda: _bytes("mlut_18.dcm"), "signed 12-bit stored unextended, modality LUT", False),
    ("high_bits", _high_bits, "bits above BitsStored set", False),
    ("SC_ybr_full_uncompressed", lambda: _bytes("SC_ybr_full_uncompressed.dcm"), "YBR_FULL (decoded to RGB)",
     False),
]


def _through_codec(codec, dicom, mode="lossless", **kw):
    out = []
    for _, pixels, bits, _ in dicom.frames:
        out.append(codec.decode(codec.encode(pixels, bits, mode, **kw)))
    return out


@pytest.mark.parametrize("case,make,what,clean", UNCOMPRESSED, ids=[c[0] for c in UNCOMPRESSED])
def test_uncompressed_files_come_back_byte_identical(codec, case, make, what, clean):
    data = make()
    dicom = read_dicom_file(case, data)
    assert dicom.header is not None, what
    assert dicom.sha256 == hashlib.sha256(data).hexdigest()
    decoded = _through_codec(codec, dicom)
    rebuilt = rebuild_dicom(decoded, dicom.header, dicom.sha256, dicom.frames[0][3], "lossless", None, case)
    assert rebuilt.data == data, what
    assert rebuilt.identical and rebuilt.note == "byte-identical to the archived file"
    kept = KeptFile.unpack(dicom.header, case)
    # the pixels are written back in the file's own layout: no residue where they say it all
    assert (kept.residue == b"") == clean, what
    assert len(kept.shell) == len(data) - kept.cut_length  # everything but the pixel value is kept


def test_a_damaged_kept_header_or_residue_is_an_error_naming_the_file(codec):
    data = _bytes("MR_small.dcm")
    dicom = read_dicom_file("MR_small.dcm", data)
    frames = [f[1] for f in dicom.frames]
    kept = KeptFile.unpack(dicom.header, "x")
    flipped = bytearray(kept.shell)
    flipped[700] ^= 0x01  # one bit of one element's bytes
    forged = KeptFile(bytes(flipped), kept.element_start, kept.cut, kept.cut_length).pack()  # digest recomputed
    with pytest.raises(ChecksumMismatchError, match="mr.dcm: the rebuilt DICOM file's SHA-256 differs"):
        rebuild_dicom(frames, forged, dicom.sha256, dicom.frames[0][3], name="mr.dcm")
    rotten = bytearray(dicom.header)
    rotten[-40] ^= 0x10  # bit rot in the stored (compressed) header
    with pytest.raises(CorruptStreamError, match="mr.dcm: the kept DICOM header is damaged"):
        rebuild_dicom(frames, bytes(rotten), dicom.sha256, dicom.frames[0][3], name="mr.dcm")


def _elements(data: bytes) -> dict[int, bytes]:
    """Every top-level element's bytes (meta group and data set) by tag."""
    lay = layout(data)
    out = {e.tag: data[e.start:e.end] for e in lay.meta}
    out.update({e.tag: data[e.start:e.end] for e in walk(data, lay.dataset_start, len(data), lay.little,
                                                            lay.implicit)})
    return out


EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
# JPEG Lossless is written by imagecodecs (the optional `bench` extra); without it, the documented
# fallback: uncompressed, the syntax change stated
HAVE_IMAGECODECS = importlib.util.find_spec("imagecodecs") is not None
JPEG_LOSSLESS = ("own", set()) if HAVE_IMAGECODECS else (EXPLICIT_LE, {0x00020000, 0x00020010})
# (file, syntax written, elements that must change besides Pixel Data)
COMPRESSED = [
    ("MR_small_RLE.dcm", "own", set()),
    ("emri_small_RLE.dcm", "own", set()),
    ("SC_rgb_rle_2frame.dcm", "own", set()),
    ("SC_rgb_rle_16bit_2frame.dcm", "own", set()),  # with a Basic Offset Table
    ("OBXXXX1A_rle.dcm", "own", set()),
    ("MR_small_jpeg_ls_lossless.dcm", "own", set()),
    ("emri_small_jpeg_ls_lossless.dcm", "own", set()),
    ("JPEGLSNearLossless_08.dcm", "own", set()),  # near-lossless syntax, written with NEAR=0
    ("MR_small_jp2klossless.dcm", "own", set()),
    ("emri_small_jpeg_2k_lossless.dcm", "own", set()),
    ("GDCMJ2K_TextGBR.dcm", "own", set()),  # YBR_RCT: RGB coded with the reversible transform
    ("JPEG-LL.dcm", *JPEG_LOSSLESS),  # JPEG Lossless SV1 via libjpeg-turbo (imagecodecs)
    ("SC_rgb_jpeg_gdcm.dcm", *JPEG_LOSSLESS),
    ("JPEG2000.dcm", EXPLICIT_LE, {0x00020000, 0x00020010}),  # lossy-capable J2K: no exact writer
    ("JPGExtended.dcm", EXPLICIT_LE, {0x00020000, 0x00020010}),  # lossy JPEG, 12-bit
    ("SC_rgb_jpeg_dcmtk.dcm", EXPLICIT_LE, {0x00020000, 0x00020010, 0x00280004}),  # YBR decoded to RGB
    ("SC_rgb_jpeg.dcm", IMPLICIT_LE, {0x00020000, 0x00020010}),  # its data set is implicit VR
]


@pytest.mark.filterwarnings("ignore:Expected explicit VR")  # SC_rgb_jpeg.dcm, as pydicom reads it here
@pytest.mark.parametrize("name,written,changes", COMPRESSED, ids=[c[0] for c in COMPRESSED])
def test_compressed_files_keep_every_other_element_and_their_pixels(codec, name, written, changes):
    data = _bytes(name)
    dicom = read_dicom_file(name, data)
    decoded = _through_codec(codec, dicom)
    rebuilt = rebuild_dicom(decoded, dicom.header, dicom.sha256, dicom.frames[0][3], "lossless", None, name)
    source = pydicom.dcmread(io.BytesIO(data))
    out = pydicom.dcmread(io.BytesIO(rebuilt.data))
    expected_syntax = source.file_meta.TransferSyntaxUID if written == "own" else written
    assert out.file_meta.TransferSyntaxUID == expected_syntax
    assert rebuilt.syntax == expected_syntax
    assert np.array_equal(out.pixel_array, source.pixel_array)  # exact pixels, decoded by pydicom
    assert rebuilt.data[:128] == data[:128]  # the preamble too
    before, after = _elements(data), _elements(rebuilt.data)
    differing = {t for t in set(before) | set(after) if before.get(t) != after.get(t)} - {0x7FE00010}
    assert differing == changes, [hex(t) for t in differing]
    if written != "own":  # the change is stated, naming the syntaxes (no element values)
        assert "transfer syntax changed from" in rebuilt.note and pydicom.uid.UID(rebuilt.syntax).name in rebuilt.note
    else:
        assert rebuilt.identical or rebuilt.note.startswith("pixels re-encoded as")
        if rebuilt.identical:
            assert rebuilt.data == data


def test_an_encapsulated_file_whose_encoder_writes_the_same_stream_comes_back_identical(codec):
    """The source's offset table is mirrored: an RLE file written as pydicom writes RLE (one
    fragment per frame, a filled Basic Offset Table) comes back byte for byte."""
    name = "SC_rgb_rle_16bit_2frame.dcm"
    data = _bytes(name)
    dicom = read_dicom_file(name, data)
    assert KeptFile.unpack(dicom.header, name).has_offset_table
    rebuilt = rebuild_dicom(_through_codec(codec, dicom), dicom.header, dicom.sha256, dicom.frames[0][3])
    assert rebuilt.identical and rebuilt.data == data


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                                  "MR_small_RLE.dcm"])
def test_near_lossless_export_declares_it_and_keeps_every_other_element(codec, name):
    data = _bytes(name)
    dicom = read_dicom_file(name, data)
    decoded = _through_codec(codec, dicom, "near-lossless", max_error=2)
    rebuilt = rebuild_dicom(decoded, dicom.header, dicom.sha256, dicom.frames[0][3], "near-lossless", 3.21, name)
    source = pydicom.dcmread(io.BytesIO(data))
    out = pydicom.dcmread(io.BytesIO(rebuilt.data))
    assert out.LossyImageCompression == "01" and "LOWRANK_BATCH" in str(out.LossyImageCompressionMethod)
    assert "3.21" in str(out.LossyImageCompressionRatio)
    assert out.SOPInstanceUID != source.SOPInstanceUID == source.file_meta.MediaStorageSOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert np.abs(out.pixel_array.astype(int) - source.pixel_array).max() <= 2
    declared = {0x00020000, 0x00020003, 0x00080018, 0x00082111, 0x00282110, 0x00282112, 0x00282114}
    if "ImageType" in source:
        declared.add(0x00080008)
    before, after = _elements(data), _elements(rebuilt.data)
    differing = {t for t in set(before) | set(after) if before.get(t) != after.get(t)} - {0x7FE00010}
    assert differing <= declared and {0x00080018, 0x00282110} <= differing, [hex(t) for t in differing]
    assert not rebuilt.identical and rebuilt.note.startswith("near-lossless: declared lossy")


def _testdata_files():
    """pydicom's own test files and pydicom-data's (RG1_*/MR2_* among them: parsing only here)."""
    folders = {os.path.dirname(get_testdata_file(n)) for n in ("CT_small.dcm", "RG3_UNCR.dcm")}
    return sorted(p for f in folders for p in glob.glob(os.path.join(f, "*")) if os.path.isfile(p))


def test_the_element_walker_sees_what_pydicom_sees():
    """On every file pydicom's test data has that pydicom reads whole: the same top-level
    elements, and the Pixel Data value where pydicom found it."""
    checked = 0
    for path in _testdata_files():
        data = Path(path).read_bytes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(data))
                tags = list(ds.keys())
                pixels = ds.PixelData if "PixelData" in ds else None
            lay = layout(data)
        except Exception:  # not a Part 10 file with a transfer syntax: not ours to keep
            continue
        if lay.syntax == "1.2.840.10008.1.2.1.99" or len(data) < 200:
            continue
        try:
            elements = walk(data, lay.dataset_start, len(data), lay.little, lay.implicit)
        except ValueError:  # truncated test files: pydicom reads them lazily, we refuse them
            assert "truncated" in path or "too_short" in path, path
            continue
        assert [e.tag for e in elements] == tags, path
        if pixels is not None:
            element = next(e for e in elements if e.tag == 0x7FE00010)
            assert data[element.value:element.value + len(pixels)] == pixels, path
        checked += 1
    assert checked > 120  # of 140-odd files


def test_a_file_whose_elements_pydicom_reads_otherwise_is_not_kept_and_says_why():
    """A repeated element (a second trailing padding): pydicom keeps one, the bytes have two.
    Where the walker and pydicom disagree nothing is kept rather than something wrong."""
    data = _bytes("CT_small.dcm") + struct.pack("<HH2s2xI", 0xFFFC, 0xFFFC, b"OB", 6) + b"\x00" * 6
    dicom = read_dicom_file("dup.dcm", data)
    assert dicom.header is None
    assert dicom.frames[0][3]["source_file"] == "not kept: its element layout could not be followed"


def test_deflated_files_are_rebuilt_from_json_and_say_so(codec):
    data = _bytes("image_dfl.dcm")
    dicom = read_dicom_file("image_dfl.dcm", data)
    assert dicom.header is None and dicom.frames[0][3]["source_file"] == "not kept: its data set is deflated"
    assert dicom.sha256 == hashlib.sha256(data).hexdigest()  # still on record, for audits


# ---- through the archive: the encode worker, `decode --format dicom`, `verify` ----
