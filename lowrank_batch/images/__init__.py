"""Bytes <-> pixel arrays: reading image files (read.py: Pillow, DICOM, NIfTI) and writing them (files.py)."""

from .files import image_bytes, write_image
from .read import SourceImage, read_image, read_image_bytes

__all__ = ["SourceImage", "image_bytes", "read_image", "read_image_bytes", "write_image"]
