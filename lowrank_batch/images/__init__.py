"""Bytes <-> pixel arrays (PNG/TIFF via Pillow, .npy via numpy; DICOM arrives with its issue)."""

from .files import read_image, write_image

__all__ = ["read_image", "write_image"]
