"""The encode worker: holds the codec (loaded once, from the weight store) and turns a unit's
images into committed archive rows. Plain Python; job.py runs it as a Ray actor. Reading the
unit's files is reading.py's job; which adapter an image gets, adapter_choice.py's."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import fsspec

from .. import __version__
from ..archive.records import ArchiveRow, FailureRecord, check_positive
from ..archive.table import dicom_columns
from ..archive.writer import UnitWriter
from ..codec.codec import QUALITY_RANGE
from ..codec.format import MODES
from ..errors import InvalidParameterError, LowrankError
from ..images.dicom import must_stay_lossless
from ..images.read import metadata_json
from ..storage import Retrier, RetryPolicy, is_storage_error
from .adapter_codecs import AdapterCodecs
from .adapter_choice import AUTO
from .archive_weights import ArchiveWeights, ResolvedWeights, attach_adapter, resolve_weights
from .devices import actor_device
from .reading import ReadUnit, read_unit
from .units import SourceFile, Unit


@dataclass(frozen=True)
class EncodeSettings:
    mode: str = "lossless"
    max_error: int | None = None
    quality: float | None = None
    model: str | None = None
    adapter: str | None = None  # an installed adapter's name, "auto" (per image, adapter_choice.py) or None
    adapter_rules: tuple[tuple[str, str], ...] = ()  # auto: (glob on image id, adapter) after the DICOM Modality

    def __post_init__(self) -> None:
        """The codec's own checks, made here: a bad option fails before Ray starts, not once per image."""
        if self.mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "near-lossless":
            check_positive("max_error (near-lossless)", self.max_error, 1, allow_none=False, integer=True)
        elif self.max_error not in (None, 0):
            raise InvalidParameterError(f"max_error applies to near-lossless mode only (mode is {self.mode})")
        lo, hi = QUALITY_RANGE
        if self.quality is not None and (isinstance(self.quality, bool) or not isinstance(self.quality, (int, float))
                                         or not lo <= self.quality <= hi):
            raise InvalidParameterError(f"quality must be a number of dB from {lo:g} to {hi:g}, got {self.quality!r}")
        for rule in self.adapter_rules:
            if not (isinstance(rule, tuple) and len(rule) == 2 and all(isinstance(x, str) and x for x in rule)):
                raise InvalidParameterError(f"adapter rule {rule!r} is not a (glob, adapter) pair")


@dataclass
class UnitResult:
    unit_id: str
    encoded: int = 0
    failed: int = 0
    bytes_in: int = 0  # raw pixel bytes at ceil(bits/8) per sample
    bytes_out: int = 0  # encoded bytes
    pixels: int = 0
    seconds: float = 0.0
    failures: list[FailureRecord] = field(default_factory=list)
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
        self._notes: list[str] = [device_note] if device_note else []  # said once per unit in its result
        auto = settings.adapter == AUTO
        self.adapters = AdapterCodecs(self.codec, settings.adapter_rules, self._notes, self._attach) if auto else None
        EncodeWorker.loads += 1
        self.settings = settings
        self.retrier = Retrier(retry)  # one outage clock for every read and write of this worker
        self.run_id = run_id

    def _attach(self, codec, name: str) -> None:
        """--adapter auto's adapter `name`, by the digest the driver resolved and shipped."""
        digest, why = self.weights.auto_digest(name)
        if digest is None:
            raise LowrankError(why)
        attach_adapter(codec, self.store.path(digest), digest)

    def info(self) -> dict:
        return {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "loads": EncodeWorker.loads, "device": self.device, "gpu_ids": _gpu_ids(),
                "model_sha256": self.codec.model.sha256, "weights_fetched_bytes": self.store.fetched_bytes}

    def encode_unit(self, unit: Unit, read: ReadUnit | None = None) -> UnitResult:
        """Encode a unit and commit it. `read` comes from a CPU task when this worker holds
        a GPU; otherwise the files are read here."""
        start = time.perf_counter()
        read = read if read is not None else read_unit(unit, self.retrier)
        result = UnitResult(unit.unit_id, failures=list(read.failures), storage_retries=read.storage_retries)
        rows = self._encode_all(read, result, unit.unit_id)
        if self._write(unit, rows, start, result):
            result.encoded = len(rows)
            for row in rows:
                names = self.adapters.names if self.adapters else {}
                key = names.get(row.adapter_sha256, row.adapter_sha256 or "none")
                result.adapters[key] = result.adapters.get(key, 0) + 1
            result.bytes_out = sum(r.encoded_bytes for r in rows)
        else:  # nothing of the unit committed: its images are failures, counted nowhere else
            result.bytes_in = result.pixels = 0
        result.notes = list(self._notes)
        self._notes.clear()
        result.failed = len(result.failures)
        result.seconds = time.perf_counter() - start
        return result

    def _encode_all(self, read: ReadUnit, result: UnitResult, unit_id: str) -> list[ArchiveRow]:
        rows: list[ArchiveRow] = []
        for source, image_id, image in read.images:
            row = self._encode_image(source, image_id, image, result)
            if row is not None:
                row.unit_id = unit_id
                rows.append(row)
        return rows

    def _write(self, unit: Unit, rows: list[ArchiveRow], start: float, result: UnitResult) -> bool:
        """Write and commit the unit's rows and failure records; False (and the rows recorded as
        `write` failures) when that cannot be done: a full disk, the store down past the deadline."""
        stats = {"images": len(rows), "failed": len(result.failures), "bytes_in": result.bytes_in,
                 "bytes_out": sum(r.encoded_bytes for r in rows), "pixels": result.pixels,
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
            result.failures += [FailureRecord.of(r.image_id, r.source_uri, "write", exc) for r in rows]
            return False
        finally:
            result.storage_retries += self.retrier.retries - before

    def _encode_image(self, source: SourceFile, image_id: str, image, result: UnitResult) -> ArchiveRow | None:
        s = self.settings
        try:
            codec = self.adapters.codec_for(image_id, image.metadata) if self.adapters else self.codec
            mode, max_error = s.mode, s.max_error
            reason = must_stay_lossless(image.metadata) if mode != "lossless" else None
            if reason:  # categories, not intensities: said once per unit, archived exactly
                mode, max_error = "lossless", None
                note = f"{s.mode} was not applied to {reason}: such images are archived lossless"
                if note not in self._notes:
                    self._notes.append(note)
            enc = codec.encode(image.pixels, image.bits_stored, mode, max_error, s.quality)
        except LowrankError as exc:
            result.failures.append(FailureRecord.of(image_id, source.uri, "encode", exc))
            return None
        latent, residual = enc.split()
        result.bytes_in += image.pixels.size * ((image.bits_stored + 7) // 8)
        result.pixels += image.pixels.shape[0] * image.pixels.shape[1]
        return ArchiveRow(
            image_id=image_id, source_uri=source.uri, source_etag=source.etag, source_size=source.size,
            shape=list(image.pixels.shape), dtype=image.pixels.dtype.name, bits_stored=image.bits_stored,
            mode=enc.mode, max_error=enc.max_error, latent=latent, residual=residual,
            pixel_sha256=enc.pixel_sha256, model_sha256=enc.model_sha256, adapter_sha256=enc.adapter_sha256,
            psnr=None if enc.psnr == float("inf") else enc.psnr, encoded_bytes=len(latent) + len(residual or b""),
            codec_version=__version__, metadata_json=metadata_json(image.metadata), run_id=self.run_id,
            dicom_header=image.columns.get("dicom_header"), dicom_sha256=image.columns.get("dicom_sha256"),
            **dicom_columns(image.metadata))


def _gpu_ids() -> list:
    import ray

    return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
