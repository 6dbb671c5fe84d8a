"""The encode worker: holds the codec (loaded once, from the weight store) and turns a unit's
files into committed archive rows. Plain Python; job.py runs it as a Ray actor."""

from __future__ import annotations

import io
import os
import tarfile
import time
from dataclasses import dataclass, field

import fsspec

from .. import __version__
from ..codec.codec import Codec
from ..errors import LowrankError
from ..images.decode import DecodedImage, decode_image_bytes, metadata_json
from ..images.dicom import must_stay_lossless
from ..archive.table import dicom_columns
from ..archive.writer import UnitWriter
from ..storage import Retrier, RetryPolicy, describe, is_storage_error
from .adapter_choice import AUTO, choose_adapter, measured_worse
from .archive_weights import ArchiveWeights, ResolvedWeights, attach_adapter, resolve_weights
from .devices import actor_device
from .units import SourceFile, Unit, printable


@dataclass(frozen=True)
class EncodeSettings:
    mode: str = "lossless"
    max_error: int | None = None
    quality: float | None = None
    model: str | None = None
    adapter: str | None = None  # an installed adapter's name, "auto" (per image, adapter_choice.py) or None
    adapter_rules: tuple[tuple[str, str], ...] = ()  # auto: (glob on image id, adapter) after the DICOM Modality


@dataclass
class UnitResult:
    unit_id: str
    encoded: int = 0
    failed: int = 0
    bytes_in: int = 0  # raw pixel bytes at ceil(bits/8) per sample
    bytes_out: int = 0  # encoded bytes
    pixels: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    adapters: dict[str, int] = field(default_factory=dict)  # images per adapter used ("none": base only)
    notes: list[str] = field(default_factory=list)  # e.g. --adapter auto found no adapter for a modality
    storage_retries: int = 0  # reads and writes tried again after a transient storage error


class EncodeWorker:
    loads = 0  # codec loads in this process (a test counts them)

    def __init__(self, dst: str, run_id: str, settings: EncodeSettings, retry: RetryPolicy = RetryPolicy(),
                 weights: ResolvedWeights | None = None):
        self.fs, self.root = fsspec.core.url_to_fs(dst)
        # by digest, from the archive the driver shipped them into (weights=None: resolved here,
        # for a worker used on its own machine)
        self.weights = weights or resolve_weights(settings.model, settings.adapter, settings.adapter_rules)[0]
        self.store = ArchiveWeights(self.fs, self.root)
        self.device, device_note = actor_device()
        self.codec = self.store.codec(self.weights.model_sha256, self.weights.adapter_sha256, self.device)
        self._by_adapter: dict[str | None, Codec] = {None: self.codec}  # auto: built on first use
        self._notes: list[str] = [device_note] if device_note else []
        EncodeWorker.loads += 1
        self._adapter_names: dict[str | None, str] = {}  # digest -> the name it was chosen by
        self.settings = settings
        self.retrier = Retrier(retry)  # one outage clock for every read and write of this worker
        self.run_id = run_id

    def info(self) -> dict:
        return {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "loads": EncodeWorker.loads, "device": self.device, "gpu_ids": _gpu_ids(), "model_sha256": self.codec.model.sha256,
                "weights_fetched_bytes": self.store.fetched_bytes}

    def encode_unit(self, unit: Unit, decoded: "DecodedUnit | None" = None) -> UnitResult:
        """Encode a unit and commit it. `decoded` comes from a CPU task when this worker holds
        a GPU; otherwise the files are read and decoded here."""
        start = time.perf_counter()
        decoded = decoded if decoded is not None else decode_unit(unit, self.retrier)
        result = UnitResult(unit.unit_id, failures=list(decoded.failures), storage_retries=decoded.storage_retries)
        rows = self._encode_all(decoded, result)
        if self._write(unit, rows, start, result):
            result.encoded = len(rows)
            for row in rows:
                key = self._adapter_names.get(row["adapter_sha256"], row["adapter_sha256"] or "none")
                result.adapters[key] = result.adapters.get(key, 0) + 1
            result.bytes_out = sum(r["encoded_bytes"] for r in rows)
        else:  # nothing of the unit committed: its images are failures, counted nowhere else
            result.bytes_in = result.pixels = 0
        result.notes, self._notes = self._notes, []
        result.failed = len(result.failures)
        result.seconds = time.perf_counter() - start
        return result

    def _encode_all(self, decoded: "DecodedUnit", result: UnitResult) -> list[dict]:
        rows: list[dict] = []
        for source, image_id, image in decoded.images:
            self._encode_image(source, image_id, image, rows, result)
        return rows

    def _write(self, unit: Unit, rows: list[dict], start: float, result: UnitResult) -> bool:
        """Write and commit the unit's rows and failure records; False (and the rows recorded as
        `write` failures) when that cannot be done: a full disk, the store down past the deadline."""
        for row in rows:
            row["unit_id"] = unit.unit_id
        stats = {"images": len(rows), "failed": len(result.failures), "bytes_in": result.bytes_in,
                 "bytes_out": sum(r["encoded_bytes"] for r in rows), "pixels": result.pixels,
                 "seconds": time.perf_counter() - start}
        writer = UnitWriter(self.fs, self.root, unit.unit_id, self.run_id)  # a retry rewrites the same keys
        before = self.retrier.retries
        try:
            self.retrier(lambda: writer.write(rows, stats, result.failures))
            return True
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            if writer.committed():  # the commit landed, only its reply was lost
                return True
            result.failures += [_failure(r["image_id"], r["source_uri"], "write", exc) for r in rows]
            return False
        finally:
            result.storage_retries += self.retrier.retries - before

    def _codec_for(self, image_id: str, metadata: dict) -> Codec:
        """The codec for one image: the fixed one, or under `auto` the base with the adapter its
        modality or source calls for (each adapter attached once per worker, the base shared)."""
        if self.settings.adapter != AUTO:
            return self.codec
        name = choose_adapter(metadata, image_id, self.settings.adapter_rules)
        if name not in self._by_adapter:
            try:
                digest, why = self.weights.auto_digest(name)
                if digest is None:
                    raise LowrankError(why)
                codec = Codec(self.codec.model, self.codec.config, self.codec.device)
                attach_adapter(codec, self.store.path(digest), digest)
                worse = measured_worse(codec.adapter_provenance)
                if worse is not None:
                    self._notes.append(f"--adapter auto: adapter {name!r} measured worse than the base on its "
                                       f"validation split (lossy BD-rate {worse:+.1f}%); not used")
                    codec = self.codec
                self._by_adapter[name] = codec
                if codec is not self.codec:
                    self._adapter_names[codec.adapter_sha256] = name
            except Exception as exc:  # not installed, bound to another base, unreadable: the base alone, said once
                self._by_adapter[name] = self.codec
                self._notes.append(f"--adapter auto: no usable adapter {name!r} for this model ({exc}); "
                                   "those images were encoded with the base model")
        return self._by_adapter[name]

    def _encode_image(self, source: SourceFile, image_id: str, image, rows: list, result: UnitResult) -> None:
        s = self.settings
        try:
            codec = self._codec_for(image_id, image.metadata)
            mode, max_error = s.mode, s.max_error
            reason = must_stay_lossless(image.metadata) if mode != "lossless" else None
            if reason:  # categories, not intensities: said once per unit, archived exactly
                mode, max_error = "lossless", None
                note = f"{s.mode} was not applied to {reason}: such images are archived lossless"
                if note not in self._notes:
                    self._notes.append(note)
            enc = codec.encode(image.pixels, image.bits_stored, mode, max_error, s.quality)
        except LowrankError as exc:
            result.failures.append(_failure(image_id, source.uri, "encode", exc))
            return
        latent, residual = enc.split()
        rows.append({
            "image_id": image_id, "source_uri": source.uri, "source_etag": source.etag,
            "source_size": source.size, "shape": list(image.pixels.shape), "dtype": image.pixels.dtype.name,
            "bits_stored": image.bits_stored, "mode": enc.mode, "max_error": enc.max_error, "latent": latent,
            "residual": residual, "pixel_sha256": enc.pixel_sha256, "model_sha256": enc.model_sha256,
            "adapter_sha256": enc.adapter_sha256, "psnr": None if enc.psnr == float("inf") else enc.psnr,
            "encoded_bytes": len(latent) + len(residual or b""), "codec_version": __version__,
            "metadata_json": metadata_json(image.metadata), "run_id": self.run_id, "unit_id": "",
            "dicom_header": image.columns.get("dicom_header"), "dicom_sha256": image.columns.get("dicom_sha256"),
            **dicom_columns(image.metadata),
        })
        result.bytes_in += image.pixels.size * ((image.bits_stored + 7) // 8)
        result.pixels += image.pixels.shape[0] * image.pixels.shape[1]


def _gpu_ids() -> list:
    import ray

    return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []


@dataclass
class DecodedUnit:
    """A unit's images as arrays (what the CPU read stage hands to an encoder)."""

    images: list[tuple[SourceFile, str, DecodedImage]]
    failures: list[dict]
    storage_retries: int = 0


def decode_unit(unit: Unit, retrier: Retrier | None = None) -> DecodedUnit:
    """Read a unit's files and decode them to arrays; unreadable files become failure records."""
    images, failures = [], []
    retrier = retrier or Retrier()
    before = retrier.retries
    for source in unit.files:
        for image_id, data, failure in _read(source, retrier):
            if failure:
                failures.append(failure)
                continue
            try:
                for image in decode_image_bytes(image_id, data):
                    images.append((source, image_id + image.suffix, image))
            except LowrankError as exc:
                failures.append(_failure(image_id, source.uri, "decode", exc))
            except Exception as exc:  # a decoder library's own error: one failure, not the unit; its
                # message may quote the file's contents (patient data), so only its type is kept
                failures.append({"image_id": image_id, "source_uri": source.uri, "stage": "decode",
                                 "error": type(exc).__name__,
                                 "message": f"{image_id}: unexpected {type(exc).__name__} while decoding"})
    return DecodedUnit(images, failures, retrier.retries - before)


def _read_bytes(uri: str) -> bytes:
    if uri.startswith(("dicomweb+http://", "dicomweb+https://")):  # an instance in a PACS
        from ..sources.dicomweb import fetch_instance

        return fetch_instance(uri)
    with fsspec.open(uri, "rb") as f:
        return f.read()


def _read(source: SourceFile, retrier: Retrier):
    """(image id, bytes, None) for each image file in a source (a tar shard's members), or
    (id, None, failure) when it cannot be read (transient storage errors retried first)."""
    try:
        data = retrier(lambda: _read_bytes(source.open_uri or source.uri))
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        yield source.rel, None, _failure(source.rel, source.uri, "read", exc)
        return
    if not source.rel.endswith(".tar"):
        yield source.rel, data, None
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            seen: set[str] = set()
            for member in tar:  # one by one: a truncated shard keeps its intact members
                # never extracted to disk: odd names are just ids
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
                    yield image_id, None, {"image_id": image_id, "source_uri": source.uri, "stage": "read",
                                           "error": "TarMemberError", "message": f"tar member {reason}"}
                    continue
                yield image_id, tar.extractfile(member).read(), None
    except (tarfile.TarError, OSError) as exc:
        yield source.rel, None, _failure(source.rel, source.uri, "read", exc)


def _failure(image_id: str, uri: str, stage: str, exc: Exception) -> dict:
    message = describe(exc) if is_storage_error(exc) else str(exc)[:500]
    return {"image_id": image_id, "source_uri": uri, "stage": stage, "error": type(exc).__name__,
            "message": message}
