"""Listing a source through fsspec and cutting it into work units (pure, tested)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import fsspec


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


@dataclass(frozen=True)
class Unit:
    unit_id: str
    files: tuple[SourceFile, ...]


def list_sources(src: str) -> list[SourceFile]:
    """Every file under SRC (a folder/prefix, local or any fsspec URL), sorted by id."""
    if src.startswith(("dicomweb+http://", "dicomweb+https://")):  # a PACS (sources/dicomweb.py)
        from ..sources.dicomweb import list_instances

        return list_instances(src)
    fs, root = fsspec.core.url_to_fs(src)
    root = root.rstrip("/")
    fs.invalidate_cache()  # a long-lived driver must see tonight's files, not cached listings
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    found = fs.find(root, detail=True)
    files = []
    for path, info in sorted(found.items()):
        if info.get("type") != "file":
            continue
        rel = path[len(root) + 1 :] if path.startswith(root + "/") else path.rsplit("/", 1)[-1]
        etag = str(info.get("ETag") or info.get("etag") or f"{info.get('mtime', info.get('LastModified', ''))}-"
                   f"{info.get('size')}").strip('"')
        uri = path if protocol in ("file", "local") else f"{protocol}://{path}"
        shown = printable(uri)
        files.append(SourceFile(shown, printable(rel), int(info.get("size") or 0), etag,
                                uri if shown != uri else ""))
    return files


def make_units(files: list[SourceFile], batch_size: int) -> list[Unit]:
    """Tar shards are a unit each; other files go in batches of `batch_size` in id order.

    Unit ids come from the ids they hold, so the same listing always gives the same units.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ordered = sorted(files, key=lambda f: f.rel)
    groups: list[tuple[SourceFile, ...]] = [(f,) for f in ordered if f.rel.endswith(".tar")]
    loose = [f for f in ordered if not f.rel.endswith(".tar")]
    groups += [tuple(loose[i : i + batch_size]) for i in range(0, len(loose), batch_size)]
    groups.sort(key=lambda g: g[0].rel)
    return [Unit(_unit_id(g), g) for g in groups]


def _unit_id(group: tuple[SourceFile, ...]) -> str:
    digest = hashlib.sha1("\n".join(f.rel for f in group).encode()).hexdigest()[:12]
    return f"u-{digest}"
