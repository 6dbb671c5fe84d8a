"""What every source lists: a source file (or PACS instance) with the version that decides a rerun.

Here, below pipeline/, so a source (DICOMweb, ...) can build them without importing the job
that consumes them (pipeline/units.py lists fsspec folders and cuts units out of these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceFile:
    uri: str  # full URI (protocol included)
    rel: str  # path relative to SRC: the image id (plus "#frame" for multi-frame files)
    size: int
    etag: str  # the store's ETag, else "<mtime>-<size>"
    open_uri: str = ""  # the URI to read when `uri` had to be made printable (non-UTF-8 names)


def printable(name: str) -> str:
    """A file name as valid Unicode: bytes that are not UTF-8 (undecodable local names arrive as
    surrogates) become \\xNN escapes, so ids and records can always be written."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
