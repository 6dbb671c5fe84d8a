"""DICOM in and out: pixels per frame, every other element as DICOM JSON, and the file's bytes.

Reading keeps the stored values as they are: BitsStored (not the container) is the codec's
bit depth, MONOCHROME1 stays inverted, signed stays signed, and RescaleSlope/Intercept and
window settings are kept as elements, never applied. Every non-pixel element goes into the
image's metadata as DICOM JSON (PS3.18 F, via pydicom's to_json_dict), which search and
DICOMweb metadata read. The file's own bytes less its pixel value are kept too, once per file
(dicom_file.keep_file), so that a decode gives back the file received (dicom_file.rebuild_dicom);
build_dicom here rebuilds from the JSON, for archives written before those bytes were kept.

Errors name the file and the problem only: a DICOM file's values (names, IDs, dates) never
appear in a message, and pydicom's own messages are replaced by ours for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidImageError
from .dicom_file import keep_file

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
LOSSY_METHOD = "LOWRANK_BATCH"  # LossyImageCompressionMethod (CS: <= 16 chars, A-Z 0-9 _)
CODEC_MIN_BITS = 8  # the codec takes 8..16 bits; 1-7 bit data rides in 8 (values unchanged)


@contextlib.contextmanager
def quiet_pydicom():
    """pydicom warns and logs with element values in the text ("invalid value for VR DA:
    '19..'"): such lines would put patient data into job logs, so they are silenced here."""
    import logging

    from pydicom import config

    logger = logging.getLogger("pydicom")
    level = logger.level
    modes = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    logger.setLevel(logging.CRITICAL + 1)
    # keep values as found (no warnings quoting them); nothing is "fixed" behind the user's back
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = modes


@dataclass(frozen=True)
class DicomFile:
    """A DICOM file read: its frames, and what the archive keeps of the file itself (once per
    file, on its first frame's row): the non-pixel bytes and the SHA-256 of the whole file."""

    frames: list[tuple[str, np.ndarray, int, dict]]  # (suffix, pixels, codec bits, metadata)
    header: bytes | None  # dicom_bytes.KeptFile, packed; None where it cannot be kept exactly
    sha256: str


def read_dicom(name: str, data: bytes) -> list[tuple[str, np.ndarray, int, dict]]:
    """(suffix, pixels, codec bits, metadata) per frame; suffix "" or "#k" for multi-frame files."""
    return read_dicom_file(name, data).frames


def read_dicom_file(name: str, data: bytes) -> DicomFile:
    with quiet_pydicom():
        try:
            return _read_dicom(name, data)
        except InvalidImageError:
            raise
        except Exception as exc:  # pydicom's messages can quote element values: the type only
            raise InvalidImageError(f"{name}: malformed DICOM ({type(exc).__name__} while reading its "
                                    "elements)") from None


def _read_dicom(name: str, data: bytes) -> DicomFile:
    import pydicom
    from pydicom.pixels import get_decoder

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # InvalidDicomError, EOFError, struct errors...: values must not leak
        raise InvalidImageError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from None
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise InvalidImageError(f"{name}: DICOM file has no PixelData (not an image, or truncated before it)")
    meta_group = getattr(ds, "file_meta", None)
    syntax = getattr(meta_group, "TransferSyntaxUID", None) if meta_group is not None else None
    if syntax is None:
        raise InvalidImageError(f"{name}: DICOM file has no TransferSyntaxUID in its file meta information")
    try:
        decoder_ok = get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        decoder_ok = False
    if not decoder_ok:
        raise InvalidImageError(f"{name}: transfer syntax {syntax} ({_syntax_name(syntax)}) is not supported")
    _check_geometry(name, ds)
    if not syntax.is_compressed:
        _check_length(name, ds)
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise InvalidImageError(f"{name}: DICOM pixel data cannot be decoded ({type(exc).__name__})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    stack = pixels if frames > 1 else pixels[None]
    bits_stored = int(ds.BitsStored)
    photometric = _decoded_photometric(ds, samples)
    kept, not_kept = keep_file(data, ds, stack)
    header = _header_json(name, ds)
    header["source_file"] = "kept" if kept is not None else f"not kept: {not_kept}"
    out = []
    for k, frame in enumerate(stack):
        meta = {"format": "DICOM", "Modality": str(getattr(ds, "Modality", "")),
                "PhotometricInterpretation": photometric, "BitsStored": bits_stored,
                "BitsAllocated": int(ds.BitsAllocated), "source_lossy_syntax": _is_lossy_syntax(syntax),
                "frame": k, "frames": frames, **header}
        out.append((f"#{k}" if frames > 1 else "", np.ascontiguousarray(frame), max(CODEC_MIN_BITS, bits_stored),
                    meta))
    return DicomFile(out, kept.pack() if kept is not None else None, hashlib.sha256(data).hexdigest())


def _is_lossy_syntax(syntax) -> bool:
    """Compressed with a lossy process (JPEG baseline/extended, lossy JPEG 2000, JPEG-LS near...)."""
    from pydicom import uid

    lossless = {uid.JPEGLossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEG2000Lossless,
                uid.JPEG2000MCLossless, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.RLELossless,
                uid.DeflatedExplicitVRLittleEndian}
    return bool(syntax.is_compressed) and syntax not in lossless


def _syntax_name(syntax) -> str:
    return getattr(syntax, "name", "unknown") or "unknown"


def _check_geometry(name: str, ds) -> None:
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored"):
        value = getattr(ds, keyword, None)
        if not isinstance(value, int) or value <= 0:
            raise InvalidImageError(f"{name}: DICOM {keyword} is missing or invalid")
    if not 1 <= ds.BitsStored <= ds.BitsAllocated <= 16:
        raise InvalidImageError(f"{name}: BitsStored {ds.BitsStored} / BitsAllocated {ds.BitsAllocated} "
                                "not supported (integer samples of up to 16 bits)")


def _check_length(name: str, ds) -> None:
    """Uncompressed pixel data must hold Rows x Columns x frames x samples values."""
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    values = ds.Rows * ds.Columns * frames * samples
    needed = (values + 7) // 8 if ds.BitsAllocated == 1 else values * (ds.BitsAllocated // 8)
    have = len(ds.PixelData) if "PixelData" in ds else needed
    if have < needed:
        raise InvalidImageError(f"{name}: pixel data is {have} bytes, Rows x Columns x frames x samples "
                                f"needs {needed}")


def _decoded_photometric(ds, samples: int) -> str:
    """The interpretation of what pixel_array returns (pydicom gives YBR data back as RGB)."""
    pi = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    return "RGB" if samples == 3 and pi.startswith("YBR") else pi


def _header_json(name: str, ds) -> dict:
    """Every element but the pixel data, as DICOM JSON; the file meta group apart."""
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    try:
        dataset = ds.to_json_dict(bulk_data_threshold=1 << 62)
        dropped = False
    except Exception:  # an element whose value is not valid for its VR: keep the rest, say so
        dataset = ds.to_json_dict(bulk_data_threshold=1 << 62, suppress_invalid_tags=True)
        dropped = True
    file_meta = ds.file_meta.to_json_dict() if getattr(ds, "file_meta", None) is not None else {}
    return {"dicom_json": dataset, "file_meta_json": file_meta, "invalid_elements_dropped": dropped}


def build_dicom(frames: list[np.ndarray], meta: dict, mode: str = "lossless", ratio: float | None = None) -> bytes:
    with quiet_pydicom():
        try:
            return _build_dicom(frames, meta, mode, ratio)
        except InvalidImageError:
            raise
        except Exception as exc:  # dcmwrite's messages quote the element that failed: the type only
            raise InvalidImageError(f"cannot write the DICOM file ({type(exc).__name__} while encoding its "
                                    "elements)") from None


def must_stay_lossless(meta: dict) -> str | None:
    """Why an image must be archived lossless whatever mode was asked, or None.

    Palette indices and label maps are categories, not intensities: a lossy index is another
    colour or another organ. Data under 8 bits rides in 8 and lossy output could leave its range.
    """
    if meta.get("format") != "DICOM":
        return None
    if meta.get("PhotometricInterpretation") == "PALETTE COLOR":
        return "palette colour indices"
    if str(meta.get("Modality", "")).upper() == "SEG":
        return "a segmentation (label map)"
    if int(meta.get("BitsStored", 8)) < CODEC_MIN_BITS:
        return f"{meta.get('BitsStored')}-bit data"
    return None


def _build_dicom(frames: list[np.ndarray], meta: dict, mode: str, ratio: float | None) -> bytes:
    """A DICOM file from decoded frames (in order) and one frame's metadata (read_dicom's):
    the fallback where the file's own bytes were not kept (dicom_file.rebuild_dicom otherwise).

    Uncompressed Explicit VR Little Endian. Lossless: the original elements with the decoded
    pixels. Lossy / near-lossless: also LossyImageCompression = 01 with ratio and method, a
    new (derived) SOP Instance UID and ImageType DERIVED, as DICOM requires of lossy images.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import set_pixel_data
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if "dicom_json" not in meta:
        raise InvalidImageError("image has no DICOM elements on record (it was not archived from DICOM)")
    ds = Dataset.from_json(meta["dicom_json"])
    ds.file_meta = FileMetaDataset(Dataset.from_json(meta.get("file_meta_json") or {}))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    number_of_frames = ds.get("NumberOfFrames")
    arr = np.stack(frames) if len(frames) > 1 else frames[0]
    if int(meta["BitsStored"]) == 1:  # binary (segmentations): packed 1-bit, as the source had it
        _set_bit_packed(ds, arr, meta["PhotometricInterpretation"])
    else:
        set_pixel_data(ds, arr, meta["PhotometricInterpretation"], int(meta["BitsStored"]),
                       generate_instance_uid=False)
    if number_of_frames is not None:  # set_pixel_data drops or rewrites it: keep the source's value
        ds.NumberOfFrames = number_of_frames
    elif "NumberOfFrames" in ds and len(frames) == 1:
        del ds.NumberOfFrames
    if mode != "lossless":
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(f).tobytes() for f in frames)).hexdigest()
        declare_lossy(ds, mode, ratio, generate_uid, digest)
    elif meta.get("source_lossy_syntax") and "LossyImageCompression" not in ds:
        ds.LossyImageCompression = "01"  # the source itself was lossy-compressed: still true of its pixels
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _set_bit_packed(ds, arr: np.ndarray, photometric: str) -> None:
    from pydicom.pixels import pack_bits

    if arr.max(initial=0) > 1:
        raise InvalidImageError("1-bit DICOM image decoded to values above 1")
    ds.PixelData = pack_bits(arr.astype(np.uint8))
    ds["PixelData"].VR = "OB"
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, photometric


def declare_lossy(ds, mode: str, ratio: float | None, generate_uid, pixel_digest: str) -> None:
    """What a lossy image must say (PS3.3 C.7.6.1.1.5): LossyImageCompression 01, the method and
    ratio appended to earlier ones, a new SOP Instance UID, ImageType DERIVED."""
    methods = list(_as_list(ds.get("LossyImageCompressionMethod")))
    ratios = list(_as_list(ds.get("LossyImageCompressionRatio")))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = methods + [LOSSY_METHOD]
    ds.LossyImageCompressionRatio = ratios + [f"{ratio:.4g}" if ratio else "1"]
    original = str(ds.get("SOPInstanceUID", ""))
    # reproducible: the same decoded pixels of the same instance always get the same UID
    uid = generate_uid(entropy_srcs=[original, mode, LOSSY_METHOD, pixel_digest])
    ds.SOPInstanceUID = uid
    if ds.file_meta is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    if "ImageType" in ds:
        ds.ImageType = ["DERIVED", *list(_as_list(ds.ImageType))[1:]]
    ds.DerivationDescription = f"{mode} compression by lowrank-batch"


def _as_list(value) -> list:
    if value is None:
        return []
    if hasattr(value, "value"):
        value = value.value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value] if value != "" else []
