"""DICOM and NIfTI in, DICOM out: real files from pydicom-data and nibabel, through the codec.

(The same path through a real Ray job and the CLI's `decode --format dicom` is in
test_dicom_job.py.)
"""

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lowrank_batch.errors import InvalidImageError
from lowrank_batch.images.read import read_image_bytes
from lowrank_batch.images.dicom import build_dicom, read_dicom

# (file, what it exercises)
ROUND_TRIP = [
    ("CT_small.dcm", "CT, signed 16-bit"),
    ("693_UNCR.dcm", "CT 512x512, BitsStored 14 in 16"),
    ("MR_small_bigendian.dcm", "big-endian source, written back little-endian"),
    ("MR_small_implicit.dcm", "implicit VR source"),
    ("RG3_UNCR.dcm", "CR, MONOCHROME1, 10-bit"),
    ("emri_small.dcm", "multi-frame MR (10 frames)"),
    ("eCT_Supplemental.dcm", "enhanced multi-frame CT"),
    ("US1_UNCR.dcm", "RGB ultrasound"),
    ("OBXXXX1A.dcm", "palette colour (indices kept, LUT kept as elements)"),
    ("liver.dcm", "1-bit segmentation, 3 frames"),
    ("MR2_UNCR.dcm", "held-out MR 1024x1024 (parsing only)"),
]
# compressed source -> its uncompressed twin (same pixels)
TWINS = [
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("693_J2KR.dcm", "693_UNCR.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),
    ("JPEG2000.dcm", "JPEG2000_UNC.dcm"),
]


def _bytes(name):
    with open(get_testdata_file(name), "rb") as f:
        return f.read()


def _encode_decode_all(codec, frames, mode="lossless", **kw):
    out = []
    for _, pixels, bits, _ in frames:
        enc = codec.encode(pixels, bits, mode, **kw)
        out.append(codec.decode(enc))
    return out


def assert_same_elements(source, rebuilt):
    """Every non-pixel element equal; group lengths (gggg,0000) are encoding details, rewritten."""
    skip = {"PixelData"}
    for el in source:
        if el.keyword in skip or el.tag.element == 0:
            continue
        assert el.tag in rebuilt, f"{el.tag} {el.keyword} missing"
        assert rebuilt[el.tag].value == el.value, f"{el.tag} {el.keyword} differs"
    extra = [el.tag for el in rebuilt if el.tag not in source and el.keyword not in skip]
    assert not extra, f"elements added: {extra}"


@pytest.mark.parametrize("name,what", ROUND_TRIP)
def test_lossless_round_trip_gives_back_the_same_dicom(codec, name, what):
    frames = read_dicom(name, _bytes(name))
    decoded = _encode_decode_all(codec, frames)
    rebuilt = pydicom.dcmread(io.BytesIO(build_dicom(decoded, frames[0][3])))
    source = pydicom.dcmread(get_testdata_file(name))
    assert np.array_equal(rebuilt.pixel_array, source.pixel_array), what
    a, b = rebuilt.pixel_array.dtype, source.pixel_array.dtype
    assert (a.kind, a.itemsize) == (b.kind, b.itemsize)  # byte order may change: we write little-endian
    if source.file_meta.TransferSyntaxUID.is_compressed or "YBR" in str(source.PhotometricInterpretation):
        return
    assert_same_elements(source, rebuilt)
    # and it is re-readable from disk-like bytes as a proper Part 10 file
    assert rebuilt.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_reader_keeps_stored_values_and_uses_bits_stored():
    frames = read_dicom("RG3_UNCR.dcm", _bytes("RG3_UNCR.dcm"))
    (_, pixels, bits, meta), = frames
    assert bits == 10 and meta["BitsStored"] == 10  # not the 16-bit container
    assert meta["PhotometricInterpretation"] == "MONOCHROME1"  # not inverted
    ct = read_dicom("CT_small.dcm", _bytes("CT_small.dcm"))[0]
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert np.array_equal(ct[1], src.pixel_array)  # stored values: rescale kept as elements, not applied
    assert ct[3]["dicom_json"]["00281053"]["Value"] == [float(src.RescaleSlope)]
    assert "7FE00010" not in ct[3]["dicom_json"]
    mf = read_image_bytes("emri.dcm", _bytes("emri_small.dcm"))
    assert [im.suffix for im in mf] == [f"#{k}" for k in range(10)]


@pytest.mark.parametrize("compressed,twin", TWINS)
def test_compressed_sources_decode_to_their_uncompressed_twins(codec, compressed, twin):
    a = read_dicom(compressed, _bytes(compressed))
    b = read_dicom(twin, _bytes(twin))
    assert len(a) == len(b)
    for (_, pa, bits_a, _), (_, pb, _, _) in zip(a, b):
        assert np.array_equal(pa, pb)
        enc = codec.encode(pa, bits_a)
        assert np.array_equal(codec.decode(enc), pb)


def test_jpeg_lossless_source_matches_pydicom(codec):
    name = "JPEG-LL.dcm"
    (_, pixels, bits, meta), = read_dicom(name, _bytes(name))
    assert np.array_equal(codec.decode(codec.encode(pixels, bits)), pydicom.dcmread(get_testdata_file(name)).pixel_array)


def test_lossy_output_declares_lossy_compression(codec):
    name = "CT_small.dcm"
    frames = read_dicom(name, _bytes(name))
    decoded = _encode_decode_all(codec, frames, "near-lossless", max_error=2)
    rebuilt = pydicom.dcmread(io.BytesIO(build_dicom(decoded, frames[0][3], "near-lossless", ratio=3.21)))
    source = pydicom.dcmread(get_testdata_file(name))
    assert rebuilt.LossyImageCompression == "01"
    assert list(rebuilt.LossyImageCompressionMethod)[-1] == "LOWRANK_BATCH" or \
        rebuilt.LossyImageCompressionMethod == "LOWRANK_BATCH"
    assert "3.21" in str(rebuilt.LossyImageCompressionRatio)
    assert rebuilt.SOPInstanceUID != source.SOPInstanceUID  # a lossy image is a new instance
    assert rebuilt.file_meta.MediaStorageSOPInstanceUID == rebuilt.SOPInstanceUID
    assert rebuilt.ImageType[0] == "DERIVED"
    assert np.abs(rebuilt.pixel_array.astype(int) - source.pixel_array).max() <= 2


def _with(name, edit):
    ds = pydicom.dcmread(get_testdata_file(name))
    edit(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _no_pixels(ds):
    del ds.PixelData


def _bad_syntax(ds):
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"


def _short(ds):
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]


BAD = [
    ("truncated in the header", lambda: _bytes("CT_small.dcm")[:3000], "no PixelData .*truncated"),
    ("truncated in the pixels", lambda: _bytes("CT_small.dcm")[:-5000], "pixel data is \\d+ bytes|not a readable"),
    ("no pixel data", lambda: _with("CT_small.dcm", _no_pixels), "no PixelData"),
    ("garbage preamble", lambda: b"\x00" * 128 + b"JUNK" + _bytes("CT_small.dcm")[132:], "not a readable DICOM"),
    ("unsupported transfer syntax", lambda: _with("CT_small.dcm", _bad_syntax), "transfer syntax 1.2.3.4.5.6"),
    ("pixel data too short", lambda: _with("emri_small.dcm", _short), "pixel data is \\d+ bytes"),
]


@pytest.mark.parametrize("what,make,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_dicom_is_refused_with_a_clear_reason(what, make, reason):
    with pytest.raises(InvalidImageError, match=reason) as info:
        read_image_bytes("bad.dcm", make())
    assert str(info.value).startswith("bad.dcm:")


def test_nifti_volume_becomes_slices_with_affine_and_header(tmp_path):
    import nibabel

    rng = np.random.default_rng(3)
    values = rng.integers(-1000, 3000, (40, 36, 5)) * 2.5 + 0.5  # not integers: nibabel stores scaled int16
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    img = nibabel.Nifti1Image(values, affine)
    img.set_data_dtype(np.int16)
    path = tmp_path / "vol.nii.gz"
    nibabel.save(img, path)
    stored = nibabel.load(path)
    raw = np.asanyarray(stored.dataobj.get_unscaled())
    assert stored.dataobj.slope not in (0, 1)  # the file really carries a rescale
    slices = read_image_bytes("vol.nii.gz", path.read_bytes())
    assert [s.suffix for s in slices] == [f"#{z}" for z in range(5)]
    for z, s in enumerate(slices):
        assert np.array_equal(s.pixels, raw[:, :, z])  # raw stored values: slope/intercept not applied
        assert s.bits_stored == 16 and np.allclose(s.metadata["affine"], affine)
    assert slices[0].metadata["scl_slope"] == pytest.approx(float(stored.dataobj.slope))
    assert slices[0].metadata["scl_inter"] == pytest.approx(float(stored.dataobj.inter))
    floats = nibabel.Nifti1Image(values.astype(np.float32), affine)
    nibabel.save(floats, tmp_path / "f.nii")
    with pytest.raises(InvalidImageError, match="f.nii: NIfTI data type float32"):
        read_image_bytes("f.nii", (tmp_path / "f.nii").read_bytes())
    with pytest.raises(InvalidImageError, match="t.nii.gz: not a readable NIfTI"):
        read_image_bytes("t.nii.gz", path.read_bytes()[:200])


def test_four_d_nifti_from_nibabel_gives_slice_and_volume_ids():
    import os

    import nibabel

    path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "example4d.nii.gz")
    with open(path, "rb") as f:
        slices = read_image_bytes("example4d.nii.gz", f.read())
    data = np.asanyarray(nibabel.load(path).dataobj.get_unscaled())
    assert len(slices) == data.shape[2] * data.shape[3]
    assert slices[1].suffix == "#1,0" and np.array_equal(slices[1].pixels, data[:, :, 1, 0])


def test_malformed_elements_are_refused_without_quoting_their_values():
    def frames_placeholder(ds):
        ds.NumberOfFrames = "12345678"

    # pydicom refuses to write a malformed IS, so plant it in the bytes (same length)
    data = _with("CT_small.dcm", frames_placeholder).replace(b"12345678", b"SECRET77")
    with pytest.raises(InvalidImageError) as info:
        read_image_bytes("odd.dcm", data)
    assert "SECRET77" not in str(info.value) and str(info.value).startswith("odd.dcm: ")


def test_categorical_and_low_bit_images_stay_lossless():
    from lowrank_batch.images.dicom import must_stay_lossless

    palette = read_dicom("OBXXXX1A.dcm", _bytes("OBXXXX1A.dcm"))[0][3]
    seg = read_dicom("liver.dcm", _bytes("liver.dcm"))[0][3]
    ct = read_dicom("CT_small.dcm", _bytes("CT_small.dcm"))[0][3]
    assert "palette" in must_stay_lossless(palette)
    assert must_stay_lossless(seg)  # a 1-bit label map
    assert must_stay_lossless(ct) is None and must_stay_lossless({"format": "PNG"}) is None


def test_lossy_source_syntax_is_still_declared_lossy(codec):
    name = "SC_rgb_jpeg_dcmtk.dcm"  # JPEG baseline: lossy before it reached us
    frames = read_dicom(name, _bytes(name))
    assert frames[0][3]["source_lossy_syntax"]
    decoded = _encode_decode_all(codec, frames)
    rebuilt = pydicom.dcmread(io.BytesIO(build_dicom(decoded, frames[0][3])))
    assert rebuilt.LossyImageCompression == "01"
    assert not read_dicom("MR_small_RLE.dcm", _bytes("MR_small_RLE.dcm"))[0][3]["source_lossy_syntax"]
