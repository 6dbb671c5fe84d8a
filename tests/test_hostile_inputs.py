"""The bad-input corpus: 30+ kinds of broken, hostile or odd files in one real Ray job. Each is
either archived exactly (where a sane reading exists) or a failure record with a clear reason;
the job finishes; the good images beside them are archived exactly; nothing lands outside DST."""

import io
import os
import re
import shutil
import struct
import tarfile
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image, PngImagePlugin
from pydicom.data import get_testdata_file

from lowrank_batch.archive import Archive

from lowrank_batch.pipeline.decoding import ArchiveDecoder
from lowrank_batch.images.files import image_bytes
from lowrank_batch.pipeline.job import JobOptions, run_encode
from lowrank_batch.pipeline.worker import EncodeSettings

from .conftest import smooth_image
from .test_nightly import QUIET


def _png_header_only(width, height):
    """A PNG whose IHDR claims width x height, with a tiny (wrong) IDAT: a decompression bomb's shape."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _pil(mode, fmt, size=(24, 20), **save):
    buf = io.BytesIO()
    Image.new(mode, size, color=1 if mode == "1" else None).save(buf, format=fmt, **save)
    return buf.getvalue()


def _dicom(edit):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    edit(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
    return buf.getvalue()


class Corpus:
    """Files to write, and what the job must make of them."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ok: dict[str, np.ndarray] = {}  # id -> the exact array it must be archived as
        self.bad: dict[str, str] = {}  # id -> regex its failure message must match

    def fail(self, name, data, reason):
        self.files[name] = data
        self.bad[name] = reason


def _broken_files(c: Corpus, rng) -> None:
    """Files that must become failure records with a clear reason."""
    png = image_bytes(smooth_image(rng, (40, 36), 16), "png")
    jpeg_buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, (40, 36), 8)).save(jpeg_buf, format="JPEG")
    tiff_buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, (40, 36), 16)).save(tiff_buf, format="TIFF")
    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        dicom = f.read()
    fail = c.fail
    fail("empty.png", b"", "file is empty")
    fail("trunc.png", png[: len(png) // 2], "not a readable image")
    fail("trunc.jpg", jpeg_buf.getvalue()[:300], "not a readable image")
    fail("trunc.tif", tiff_buf.getvalue()[:200], "not a readable image")
    fail("trunc.dcm", dicom[:3000], "no PixelData|not a readable DICOM")
    fail("notes.png", b"these are meeting notes, not pixels\n" * 10, "not an image")
    fail("bomb.png", _png_header_only(60000, 60000), "not a readable image.*(DecompressionBomb|exceeds)")
    fail("palette.png", _pil("P", "PNG"), "mode P is not supported")
    fail("rgba.png", _pil("RGBA", "PNG"), "mode RGBA is not supported")
    fail("grey_alpha.png", _pil("LA", "PNG"), "mode LA is not supported")
    fail("cmyk.jpg", _pil("CMYK", "JPEG"), "mode CMYK is not supported")
    fail("one_bit.png", _pil("1", "PNG"), "mode 1 is not supported")
    fail("float32.tif", _pil("F", "TIFF"), "mode F is not supported")
    fail("int32.tif", _pil("I", "TIFF"), "mode I is not supported")
    gif = io.BytesIO()
    frames = [Image.new("P", (16, 16), k) for k in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    fail("animated.gif", gif.getvalue(), "GIF with \\d+ frames is not supported|mode P is not supported")
    wide = (rng.integers(0, 65535, (12, 10, 3))).astype(np.uint16)
    import imagecodecs

    fail("rgb16.png", imagecodecs.png_encode(wide), "16-bit RGB PNG is not supported")
    fail("no_pixels.dcm", _dicom(lambda ds: ds.__delattr__("PixelData")), "no PixelData")
    fail("bad_syntax.dcm", _dicom(lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.99")),
         "transfer syntax 1.2.3.99")
    fail("short_pixels.dcm", _dicom(lambda ds: setattr(ds, "PixelData", ds.PixelData[:100])), "pixel data is 100 bytes")
    fail("garbage_preamble.dcm", b"\x00" * 128 + b"XXXX" + dicom[132:], "not a readable DICOM")


def _sane_files(c: Corpus, rng, good: dict) -> None:
    """Odd files with a sane reading: archived exactly."""
    files, ok = c.files, c.ok
    jpeg_buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, (40, 36), 8)).save(jpeg_buf, format="JPEG")
    pages = [smooth_image(rng, (18, 22), 16) for _ in range(3)]
    buf = io.BytesIO()
    Image.fromarray(pages[0]).save(buf, format="TIFF", save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]])
    files["pages.tif"] = buf.getvalue()
    ok.update({f"pages.tif#{k}": p for k, p in enumerate(pages)})  # each page an image
    over = smooth_image(rng, (20, 20), 16)  # values up to 65535 under a PNG sBIT of 12: kept as 16-bit
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    buf = io.BytesIO()
    Image.fromarray(over).save(buf, format="PNG", pnginfo=info)
    files["over12.png"] = buf.getvalue()
    ok["over12.png"] = over
    twelve = smooth_image(rng, (20, 20), 12)  # a 12-bit scan in 16-bit samples, declared: 12 bits
    files["sbit12.png"] = image_bytes(twelve, "png", bits_stored=12)
    ok["sbit12.png"] = twelve
    jpeg_named_png = jpeg_buf.getvalue()
    files["actually_jpeg.png"] = jpeg_named_png  # content decides, not the name
    ok["actually_jpeg.png"] = np.asarray(Image.open(io.BytesIO(jpeg_named_png)))
    long_name = "l" * 200 + ".png"
    files[long_name] = image_bytes(good["good/g0.png"], "png")
    ok[long_name] = good["good/g0.png"]


def _tar_shards(c: Corpus, rng) -> None:
    """Shards with path tricks, links, duplicates, and one cut short."""
    files, ok, bad = c.files, c.ok, c.bad
    member = image_bytes(smooth_image(rng, (16, 16), 8), "png")
    member_array = np.asarray(Image.open(io.BytesIO(member)))
    files["shard.tar"] = _tar([("../escape.png", "file", member), ("/abs/rooted.png", "file", member),
                               ("link.png", "symlink", "/etc/passwd"), ("hard.png", "hardlink", "../escape.png"),
                               ("dup.png", "file", member), ("dup.png", "file", member)])
    ok["shard.tar/../escape.png"] = member_array  # a member's path is only an id: never extracted
    ok["shard.tar//abs/rooted.png"] = member_array
    ok["shard.tar/dup.png"] = member_array
    bad["shard.tar/link.png"] = "link: not followed"
    bad["shard.tar/hard.png"] = "link: not followed"
    bad["shard.tar/dup.png#duplicate2"] = "repeats an earlier member"  # the first dup.png is archived
    full = _tar([("a.png", "file", member), ("b.png", "file", member)])
    cut = 512 + -(-len(member) // 512) * 512 + 512 + 100  # a.png whole, then into b.png's data
    files["truncated.tar"] = full[:cut]
    ok["truncated.tar/a.png"] = member_array  # what is intact is kept
    bad["truncated.tar"] = "ReadError|unexpected end|truncated"


def build_corpus(src):
    """Returns (expected archived {id: array}, expected failures {id: reason regex})."""
    rng = np.random.default_rng(17)
    good = {f"good/g{k}.png": smooth_image(rng, (26, 30), 12) for k in range(3)}
    c = Corpus()
    c.ok.update(good)
    c.files.update({name: image_bytes(a, "png") for name, a in good.items()})
    _broken_files(c, rng)
    _sane_files(c, rng, good)
    _tar_shards(c, rng)
    for name, data in c.files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # a file name that is not UTF-8 (bytes from an old scanner's export)
    raw_name = os.path.join(os.fsencode(src), b"scan_\xff\xfe.png")
    with open(raw_name, "wb") as f:
        f.write(image_bytes(good["good/g1.png"], "png"))
    c.ok["scan_\\xff\\xfe.png"] = good["good/g1.png"]
    return c.ok, c.bad


@pytest.fixture(autouse=True)
def _ray_env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def test_bad_input_corpus(cluster, tmp_path):
    sandbox = tmp_path / "sandbox"
    src, dst = sandbox / "src", sandbox / "dst"
    src.mkdir(parents=True)
    ok, bad = build_corpus(src)
    assert len(ok) + len(bad) >= 30
    before = {p for p in sandbox.rglob("*")}
    summary = run_encode(str(src), str(dst), EncodeSettings(), JobOptions(gpus_per_worker=0, batch_size=4), **QUIET)

    archive = Archive.open(str(dst))
    assert sorted(archive.ids()) == sorted(ok)
    for image_id, expected in ok.items():
        assert np.array_equal(ArchiveDecoder(archive).get(image_id), expected), image_id
    failures = {f["image_id"]: f for f in archive.failures()}
    assert set(failures) == set(bad)
    for image_id, reason in bad.items():
        message = failures[image_id]["message"]
        assert re.search(reason, message), (image_id, message)
    assert summary["encoded"] == len(ok) and summary["failed"] == len(bad)  # inputs = archived + failed
    bits = {i: archive.row(i, ["bits_stored", "metadata_json"]) for i in ("over12.png", "sbit12.png")}
    assert bits["sbit12.png"]["bits_stored"] == 12 and bits["over12.png"]["bits_stored"] == 16
    assert "sbit_ignored" in bits["over12.png"]["metadata_json"]

    after = {p for p in sandbox.rglob("*")}
    outside = {p for p in after - before if dst not in p.parents and p != dst}
    assert not outside, f"written outside DST: {outside}"
    assert not os.path.exists("/abs/rooted.png") and not (sandbox / "escape.png").exists()
    shutil.rmtree(sandbox)


S3_KEYS = ["scan 01 (copy).png", "Müller Ünal/ß→ct #1.png", "a+b=c&d?x.png", "%20not-a-space.png",
           "日本語/画像.png", "  leading and trailing  .png"]


def test_s3_keys_with_spaces_and_unicode_are_archived_under_their_own_names(cluster):
    """Object keys with spaces, unicode, URL-reserved characters and a literal %20 on SeaweedFS:
    each is read by its real key and archived under its own name, exactly once."""
    import fsspec

    fs = fsspec.filesystem("s3")
    rng = np.random.default_rng(31)
    images = {key: smooth_image(rng, (20, 22), 12) for key in S3_KEYS}
    for key, a in images.items():
        fs.pipe_file(f"src/keys/{key}", image_bytes(a, "png"))
    summary = run_encode("s3://src/keys", "s3://archive/keys", EncodeSettings(), JobOptions(gpus_per_worker=0),
                         **QUIET)
    assert (summary["encoded"], summary["failed"]) == (len(S3_KEYS), 0), summary["failures"]
    archive = Archive.open("s3://archive/keys")
    assert sorted(archive.ids()) == sorted(S3_KEYS)
    for key, a in images.items():
        assert np.array_equal(ArchiveDecoder(archive).get(key), a), key
        assert archive.sources[key][0] == f"s3://src/keys/{key}"
    again = run_encode("s3://src/keys", "s3://archive/keys", EncodeSettings(), JobOptions(gpus_per_worker=0), **QUIET)
    assert (again["encoded"], again["skipped"]) == (0, len(S3_KEYS))  # ETags matched by the same names
