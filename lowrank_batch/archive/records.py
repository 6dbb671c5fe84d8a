"""The archive's records as typed values, validated where they are built.

    FailureRecord   an input that could not be archived (read, decode, encode, write, worker)
    ArchiveRow      one image's row of a data file (the columns of schema.SCHEMA)
    CommitRecord    the JSON that commits a unit's data file (or removes ids: a tombstone)
    RunSummary      what an encode run did; saved as runs/<run-id>.json

On disk they stay plain JSON and Parquet (any reader can read them); in memory they are these
dataclasses. Key access (`summary["encoded"]`) still works for callers written against the
dicts they replace; new code reads attributes.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from dataclasses import asdict, dataclass, field

from ..errors import InvalidParameterError
from .schema import DATA_DIR, FAILURES_DIR, SCHEMA

# where an input failed: reading its bytes, decoding them to pixels (a file that is not a readable
# image), encoding, writing its unit, or its worker dying; "output": the decode job could not
# decode or write an archived image back out
STAGES = ("read", "decode", "encode", "write", "worker", "output")
MESSAGE_LIMIT = 500  # characters of an error message kept in a record


class _Keyed:
    """Read access by key, for callers written against the dicts these records replace."""

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class FailureRecord(_Keyed):
    image_id: str
    source_uri: str
    stage: str
    error: str  # the exception's type name
    message: str
    run_id: str | None = None  # set when the unit commits
    time: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"failure stage must be one of {STAGES}, got {self.stage!r}")
        for name in ("image_id", "source_uri", "error", "message"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"FailureRecord.{name} must be a string, got {getattr(self, name)!r}")
        if len(self.message) > MESSAGE_LIMIT:
            object.__setattr__(self, "message", self.message[:MESSAGE_LIMIT])

    @classmethod
    def of(cls, image_id: str, source_uri: str, stage: str, exc: BaseException,
           message: str | None = None) -> "FailureRecord":
        """A record for an exception; storage errors are described without the store's own text."""
        if message is None:
            from ..storage import describe, is_storage_error

            message = describe(exc) if is_storage_error(exc) else str(exc)
        return cls(image_id, source_uri, stage, type(exc).__name__, message)

    def stamped(self, run_id: str, time: str) -> "FailureRecord":
        return dataclasses.replace(self, run_id=run_id, time=time)


@dataclass
class ArchiveRow(_Keyed):
    """One image's row; `to_dict` gives exactly the schema's columns."""

    image_id: str
    source_uri: str
    source_etag: str
    source_size: int
    shape: list[int]
    dtype: str
    bits_stored: int
    mode: str
    max_error: int
    latent: bytes
    residual: bytes | None
    pixel_sha256: str
    model_sha256: str
    adapter_sha256: str | None
    psnr: float | None  # None: exact (lossless)
    encoded_bytes: int
    codec_version: str
    metadata_json: str
    run_id: str
    unit_id: str = ""
    dicom_header: bytes | None = None  # a DICOM file's own bytes less its pixels, on its first frame's row
    dicom_sha256: str | None = None  # of the whole DICOM file as received
    modality: str | None = None  # DICOM identity columns (archive/table.py:dicom_columns)
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("lossless", "near-lossless", "lossy"):
            raise ValueError(f"{self.image_id}: row mode {self.mode!r} is not an archive mode")
        if (self.residual is None) != (self.mode == "lossy"):
            raise ValueError(f"{self.image_id}: a {self.mode} row {'has' if self.residual else 'lacks'} a residual")
        if self.encoded_bytes != len(self.latent) + len(self.residual or b""):
            raise ValueError(f"{self.image_id}: encoded_bytes {self.encoded_bytes} is not latent + residual")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in SCHEMA.names}


@dataclass(frozen=True)
class CommitRecord(_Keyed):
    """Commits a unit: its data file, each id's (row group, row) and source; or, with `removed`,
    unlists ids (a tombstone). Written after the data file is complete: THE commit point."""

    file: str | None  # data/<name>.parquet; None when every input failed, or for a tombstone
    unit_id: str
    run_id: str
    committed_at: str
    index: dict[str, list[int]] = field(default_factory=dict)  # id -> [row group, row]
    sources: dict[str, list] = field(default_factory=dict)  # id -> [uri, etag, size]
    stats: dict = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # FailureRecord dicts
    failures_file: str | None = None
    removed: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.index)

    def to_json(self) -> bytes:
        record = asdict(self)
        record["rows"] = self.rows
        if not self.removed:  # as records were before tombstones existed
            del record["removed"]
        return json.dumps(record, sort_keys=True).encode()

    @classmethod
    def parse(cls, raw: bytes | str) -> "CommitRecord":
        """A stored record, checked before anything trusts it; ValueError when it is not one."""
        r = json.loads(raw)
        if not valid_commit_record(r):
            raise ValueError("not a commit record")
        return cls(r.get("file"), r.get("unit_id", ""), r.get("run_id", ""), r["committed_at"], r["index"],
                   r.get("sources", {}), r.get("stats", {}), r.get("failures", []), r.get("failures_file"),
                   r.get("removed", []))


def _inside(path, folder: str) -> bool:
    """A record may only name a file directly in the archive's own folder (no ../, no absolute
    path): a hostile record in a shared bucket must not make readers open anything else."""
    return isinstance(path, str) and posixpath.dirname(path) == folder and ".." not in path \
        and not path.startswith("/") and "\\" not in path


def valid_commit_record(r) -> bool:
    """The shape of a commit record (writer.py), checked before anything trusts it."""
    def str_list(v):
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    try:
        return (isinstance(r, dict) and isinstance(r.get("committed_at"), str)
                and (r.get("file") is None or _inside(r["file"], DATA_DIR))
                and isinstance(r.get("index"), dict) and isinstance(r.get("sources", {}), dict)
                and all(isinstance(k, str) and isinstance(v, list) and len(v) == 2
                        and all(isinstance(n, int) and n >= 0 for n in v) for k, v in r["index"].items())
                and all(isinstance(r.get("sources", {}).get(k), list) and len(r["sources"][k]) == 3
                        for k in r["index"])
                and str_list(r.get("removed", []))
                and isinstance(r.get("failures", []), list)
                and all(isinstance(f, dict) and isinstance(f.get("image_id"), str) and isinstance(f.get("time"), str)
                        for f in r.get("failures", []))
                and (r.get("failures_file") is None or _inside(r["failures_file"], FAILURES_DIR))
                and _valid_maintenance(r))
    except (TypeError, AttributeError):
        return False


def _valid_maintenance(r: dict) -> bool:
    """Compaction's moves and vacuum's expired versions (maintenance.py), when present."""
    moves, expired = r.get("relocated", {}), r.get("expired", [])
    return (isinstance(moves, dict) and (not moves or _inside(r.get("file"), DATA_DIR))
            and all(isinstance(k, str) and isinstance(v, list) and len(v) == 6 and isinstance(v[0], str)
                    and _inside(v[1], DATA_DIR) and all(isinstance(n, int) and n >= 0 for n in v[2:])
                    for k, v in moves.items())
            and isinstance(expired, list)
            and all(isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in expired))


# the counters a unit's result adds to its run (pipeline.worker.UnitResult has each)
UNIT_COUNTERS = ("encoded", "failed", "bytes_in", "bytes_out", "pixels", "storage_retries")


@dataclass
class RunSummary(_Keyed):
    """An encode run: what it was asked (settings, codec), what it did, how long it took."""

    run_id: str
    src: str
    dst: str
    settings: dict  # the EncodeSettings, in full
    codec: dict = field(default_factory=dict)  # the codec's config, model and version it ran with
    weights: dict = field(default_factory=dict)  # the digests shipped into the archive, and what was copied
    options: dict = field(default_factory=dict)  # the JobOptions
    encoded: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    failures: list[FailureRecord] = field(default_factory=list)
    gone: int = 0
    gone_ids: list[str] = field(default_factory=list)  # the first 1000
    pruned: int = 0
    adapters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    storage_retries: int = 0
    run_record_error: str | None = None
    orphans_removed: int = 0
    checkpoint: str | None = None  # the checkpoint written after this run's commits (checkpoint.py)
    startup_seconds: float | None = None  # until the first unit's result (actors up, weights loaded)
    seconds: float = 0.0
    ratio: float | None = None
    megapixels_per_second: float = 0.0

    def add_unit(self, result) -> None:
        """Add one unit's result (counters, failures, adapters used, notes)."""
        for key in UNIT_COUNTERS:
            setattr(self, key, getattr(self, key) + getattr(result, key))
        self.failures += result.failures
        for name, count in result.adapters.items():
            self.adapters[name] = self.adapters.get(name, 0) + count
        self.notes += [n for n in result.notes if n not in self.notes]

    def finish(self, seconds: float) -> None:
        self.seconds = seconds
        self.ratio = self.bytes_in / self.bytes_out if self.bytes_out else None
        self.megapixels_per_second = self.pixels / 1e6 / seconds if seconds > 0 else 0.0

    def to_json(self) -> bytes:
        record = asdict(self)
        if record["startup_seconds"] is None:  # no unit ran: as run records were before
            del record["startup_seconds"]
        return json.dumps(record, indent=1).encode()


def check_positive(name: str, value, minimum: float = 0, allow_none: bool = True, integer: bool = False) -> None:
    """For option records: `value` >= minimum (and an int when `integer`), named in the error."""
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:
        kind = "an integer" if integer else "a number"
        raise InvalidParameterError(f"{name} must be {kind} >= {minimum:g}, got {value!r}")
