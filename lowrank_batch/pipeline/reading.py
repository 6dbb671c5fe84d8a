"""Reading a unit's source files into images: fetching bytes (storage errors retried), unpacking
tar shards (never to disk; links, odd members and repeated names refused by name), reading each
file's images. Unreadable inputs become failure records, never a failed unit.

Shared by the encode worker (in-process, or as CPU tasks ahead of GPU workers) and the report,
which re-reads an image's source to compare it with its decode.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass

import fsspec

from ..archive.records import FailureRecord
from ..errors import LowrankError
from ..images.read import SourceImage, read_image_bytes
from ..storage import Retrier, is_storage_error
from .units import SourceFile, Unit, printable


@dataclass
class ReadUnit:
    """A unit's images as arrays (what the CPU read stage hands to an encoder)."""

    images: list[tuple[SourceFile, str, SourceImage]]
    failures: list[FailureRecord]
    storage_retries: int = 0


def read_unit(unit: Unit, retrier: Retrier | None = None) -> ReadUnit:
    """Read a unit's files into arrays; unreadable files become failure records."""
    images, failures = [], []
    retrier = retrier or Retrier()
    before = retrier.retries
    for source in unit.files:
        for image_id, data, failure in read_source(source, retrier):
            if failure:
                failures.append(failure)
                continue
            try:
                for image in read_image_bytes(image_id, data):
                    images.append((source, image_id + image.suffix, image))
            except LowrankError as exc:
                failures.append(FailureRecord.of(image_id, source.uri, "decode", exc))
            except Exception as exc:  # a reader library's own error: one failure, not the unit; its
                # message may quote the file's contents (patient data), so only its type is kept
                failures.append(FailureRecord.of(image_id, source.uri, "decode", exc,
                                                 f"{image_id}: unexpected {type(exc).__name__} while decoding"))
    return ReadUnit(images, failures, retrier.retries - before)


def read_bytes(uri: str) -> bytes:
    if uri.startswith(("dicomweb+http://", "dicomweb+https://")):  # an instance in a PACS
        from ..sources.dicomweb import fetch_instance

        return fetch_instance(uri)
    with fsspec.open(uri, "rb") as f:
        return f.read()


def read_source(source: SourceFile, retrier: Retrier):
    """(image id, bytes, None) for each image file in a source (a tar shard's members), or
    (id, None, failure) when it cannot be read (transient storage errors retried first)."""
    try:
        data = retrier(lambda: read_bytes(source.open_uri or source.uri))
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        yield source.rel, None, FailureRecord.of(source.rel, source.uri, "read", exc)
        return
    if not source.rel.endswith(".tar"):
        yield source.rel, data, None
        return
    try:
        yield from tar_members(source, data)
    except (tarfile.TarError, OSError) as exc:
        yield source.rel, None, FailureRecord.of(source.rel, source.uri, "read", exc)


def tar_members(source: SourceFile, data: bytes):
    """A shard's members one by one (a truncated shard keeps its intact members), never
    extracted to disk: odd names are just ids."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        seen: set[str] = set()
        for member in tar:
            image_id = f"{source.rel}/{printable(member.name)}"
            if member.isdir():
                continue
            reason = ("is a link: not followed" if member.issym() or member.islnk() else
                      "is not a regular file" if not member.isfile() else
                      "repeats an earlier member's name: only the first is archived" if image_id in seen else None)
            if image_id in seen:  # its own failure id: the first one's id is archived
                image_id = f"{image_id}#duplicate{sum(1 for s in seen if s.startswith(image_id)) + 1}"
            seen.add(image_id)
            if reason:
                yield image_id, None, FailureRecord(image_id, source.uri, "read", "TarMemberError",
                                                    f"tar member {reason}")
                continue
            yield image_id, tar.extractfile(member).read(), None


def read_original(image_id: str, source_uri: str) -> SourceImage | None:
    """The image `image_id` read again from its source file, if that is still there and still
    holds it (tar shard members are not re-read: a whole shard for one image is not worth it)."""
    name = image_id.rsplit("#", 1)[0] if "#" in image_id else image_id
    if ".tar/" in name:
        return None
    try:
        data = read_bytes(source_uri)
    except OSError:
        return None
    try:
        for image in read_image_bytes(name, data):
            if name + image.suffix == image_id:
                return image
    except LowrankError:
        return None
    return None
