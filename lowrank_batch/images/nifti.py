"""NIfTI volumes in: each slice an image (id `vol.nii.gz#z`, or `#z,t` for 4-D), stored values.

The raw stored integers are kept (scl_slope/scl_inter are recorded, not applied, as DICOM's
rescale is); the affine and the header go into each slice's metadata. Floating-point volumes
are refused: the codec is for integer samples.
"""

from __future__ import annotations

import gzip

import numpy as np

from ..errors import InvalidImageError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(name: str, data: bytes) -> list[tuple[str, np.ndarray, int, dict]]:
    """(suffix, slice, bits, metadata) per slice."""
    import nibabel

    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        kind = nibabel.Nifti2Image if int.from_bytes(raw[:4], "little") == 540 or \
            int.from_bytes(raw[:4], "big") == 540 else nibabel.Nifti1Image
        img = kind.from_bytes(raw)
        volume = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:  # truncated gzip, bad header, short data...
        raise InvalidImageError(f"{name}: not a readable NIfTI volume ({type(exc).__name__})") from None
    if volume.dtype.kind not in "iu" or volume.dtype.itemsize > 2:
        raise InvalidImageError(f"{name}: NIfTI data type {volume.dtype} is not supported "
                                "(8/16-bit integers; the codec is for integer samples)")
    if volume.ndim == 2:
        volume = volume[:, :, None]
    if volume.ndim not in (3, 4):
        raise InvalidImageError(f"{name}: NIfTI volume has {volume.ndim} dimensions (2-4 supported)")
    header = {k: _jsonable(v) for k, v in img.header.items()}
    # nibabel moves scl_slope/scl_inter out of the header into the data proxy on load
    scaling = {"scl_slope": _jsonable(img.dataobj.slope), "scl_inter": _jsonable(img.dataobj.inter)}
    base = {"format": "NIfTI", "affine": img.affine.tolist(), "nifti_header": header, **scaling,
            "shape": list(volume.shape), "dtype": volume.dtype.name}
    bits = 8 * volume.dtype.itemsize
    out = []
    times = volume.shape[3] if volume.ndim == 4 else 1
    for t in range(times):
        for z in range(volume.shape[2]):
            sl = volume[:, :, z, t] if volume.ndim == 4 else volume[:, :, z]
            suffix = f"#{z},{t}" if volume.ndim == 4 else f"#{z}"
            out.append((suffix, np.ascontiguousarray(sl), bits, {**base, "slice": z, "volume": t}))
    return out


def _jsonable(value):
    """A header field as JSON: text decoded, NaN as null, arrays as lists."""
    arr = np.asarray(value)
    if arr.dtype.kind in "SUV":
        items = [x.decode("latin-1") if isinstance(x, bytes) else str(x) for x in arr.ravel().tolist()]
        return items if arr.ndim else items[0]
    if arr.dtype.kind == "f":
        items = [None if not np.isfinite(x) else float(x) for x in arr.ravel()]
        return items if arr.ndim else items[0]
    return arr.tolist()
